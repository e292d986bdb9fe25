/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Identity resolution and container-aware isolation.
 *
 * Addresses become identities through two lookups that do not grow with the
 * number of containers: an exact hash for local endpoints, then the LPM
 * ipcache (host addresses, CIDR prefixes named by policy, 0.0.0.0/0 as
 * world). Policy is an LPM trie keyed by (endpoint, peer, direction, proto,
 * port): at most two lookups per direction (the peer, then the wildcard
 * peer), and only for the first packet of a connection.
 */
#ifndef BASTION_POLICY_H
#define BASTION_POLICY_H

#include "common.h"

struct peer_info {
	__u32 identity;
	__u32 is_host;
	struct endpoint_info *ep;	/* set when the peer is a local managed endpoint */
	struct remote_endpoint *remote;	/* set when it is an endpoint on another node */
};

static __always_inline void resolve_peer(__be32 addr, struct peer_info *peer)
{
	struct ipcache_key key = { .prefixlen = IPCACHE_PREFIX_HOST, .addr = addr };
	struct ipcache_val *ipc;

	peer->remote = NULL;
	peer->ep = bpf_map_lookup_elem(&bastion_ep_ip, &addr);
	if (peer->ep) {
		peer->identity = peer->ep->identity;
		peer->is_host = 0;
		return;
	}
	/* Another node's endpoint (only those local endpoints depend on are here). */
	peer->remote = bpf_map_lookup_elem(&bastion_remote, &addr);
	if (peer->remote) {
		peer->identity = peer->remote->identity;
		peer->is_host = 0;
		return;
	}
	ipc = bpf_map_lookup_elem(&bastion_ipcache, &key);
	if (ipc) {
		peer->identity = ipc->identity;
		peer->is_host = ipc->flags & IPC_F_HOST;
	} else {
		peer->identity = ID_WORLD;
		peer->is_host = 0;
	}
}

/* Does `ep_id`'s policy allow traffic with `peer_id` in `dir` on proto/port?
 * Returns the rule id (never 0 for an allowed entry: rule ids start at 1) or 0. */
static __always_inline __u32 policy_allows(__u32 ep_id, __u32 peer_id, __u8 dir, __u8 proto, __be16 dport)
{
	struct policy_key key = {
		.prefixlen = POLICY_PREFIX_FULL,
		.ep_id = ep_id,
		.peer_id = peer_id,
		.direction = dir,
		.proto = proto,
		.dport = dport,
	};
	struct policy_val *val;

	val = bpf_map_lookup_elem(&bastion_policy, &key);
	if (val)
		return val->rule_id ? val->rule_id : 1;
	key.peer_id = ID_ANY;
	val = bpf_map_lookup_elem(&bastion_policy, &key);
	if (val)
		return val->rule_id ? val->rule_id : 1;
	return 0;
}

/* May `ep_id` resolve `peer_id`'s MAC (a dependency in either direction)?
 * (ep_id, ID_ANY) stands for a rule with a wildcard peer: anyone. */
static __always_inline int neigh_allowed(__u32 ep_id, __u32 peer_id)
{
	struct neigh_key key = { .ep_id = ep_id, .peer_id = peer_id };

	if (bpf_map_lookup_elem(&bastion_neigh, &key))
		return 1;
	key.peer_id = ID_ANY;
	return bpf_map_lookup_elem(&bastion_neigh, &key) != NULL;
}

#endif /* BASTION_POLICY_H */
