/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Between nodes: VXLAN with the sender's identity in the tunnel key.
 *
 * The node has one VXLAN device in external (collect_md) mode. A packet for
 * an endpoint on another node gets its tunnel metadata here (VNI = the
 * sending endpoint's identity, remote = the receiving endpoint's node) and is
 * redirected to that device, which encapsulates it: no bridge, no routing
 * table, no iptables on the way. Identities of cluster endpoints fit in the
 * VNI's 24 bits (the control plane allocates them so).
 *
 * On the receiving node the identity is a claim, and a claim is believed
 * only from the node that holds it: the inner source address must be a
 * remote endpoint this node knows, with exactly the claimed identity, on the
 * node whose underlay address is the outer source. A host on the underlay
 * can therefore not speak for another host's containers, and a container
 * cannot speak for anybody through a VXLAN packet of its own making (its
 * packets to other nodes' underlay addresses are not allowed in the first
 * place: those addresses are ID_REMOTE_NODE, never world).
 *
 * What VXLAN cannot give: the outer source address is not authenticated.
 * An underlay that lets a host forge another host's address must be fixed
 * on the underlay (source address validation); see docs/cluster.md.
 */
#ifndef BASTION_ENCAP_H
#define BASTION_ENCAP_H

#include "common.h"
#include "events.h"

#define TUNNEL_TTL	64
#define TUNNEL_VNI_MASK	0xffffff

static __always_inline struct tunnel_info *get_tunnel(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&bastion_tunnel, &zero);
}

/*
 * Hand a packet to another node's endpoint: tunnel key, then the VXLAN
 * device. Returns the tc verdict, or -REASON_NO_TUNNEL when this node has no
 * tunnel (the caller drops with that reason). The UDP checksum stays zero,
 * as on Docker's and flannel's VXLAN (the inner packet carries its own).
 */
static __always_inline int tunnel_redirect(struct __sk_buff *skb, const struct remote_endpoint *dst, __u32 src_identity)
{
	struct tunnel_info *t = get_tunnel();
	struct bpf_tunnel_key key = {};

	if (!t || !t->ifindex)
		return -REASON_NO_TUNNEL;
	key.tunnel_id = src_identity & TUNNEL_VNI_MASK;
	key.remote_ipv4 = bpf_ntohl(dst->node_ipv4);
	key.tunnel_ttl = TUNNEL_TTL;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX))
		return TC_ACT_SHOT;
	return bpf_redirect(t->ifindex, 0);
}

/*
 * Who sent this packet through the tunnel: the remote endpoint of its inner
 * source address, if that endpoint has the claimed identity (the VNI) and
 * lives on the node the packet comes from (the outer source). Returns 0 and
 * sets *src, or a REASON_* to drop it for.
 */
static __always_inline int tunnel_source(__be32 inner_saddr, const struct bpf_tunnel_key *key,
					 struct remote_endpoint **src)
{
	struct remote_endpoint *r = bpf_map_lookup_elem(&bastion_remote, &inner_saddr);

	if (!r)
		return REASON_TUNNEL_UNKNOWN_SOURCE;
	if (r->identity != key->tunnel_id || r->node_ipv4 != bpf_htonl(key->remote_ipv4))
		return REASON_TUNNEL_SPOOFED;
	*src = r;
	return 0;
}

#endif /* BASTION_ENCAP_H */
