/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv4 fragments. Only the first fragment carries the L4 header, so policy
 * and conntrack can only decide on it. When it passes, its ports are kept
 * under (saddr, daddr, IP id, proto); later fragments borrow them and go
 * through conntrack like any other packet of the flow. A later fragment
 * whose first fragment was never seen (or was dropped) is dropped: that is
 * the classic way to slip a payload past a port filter.
 */
#ifndef BASTION_FRAGMENTS_H
#define BASTION_FRAGMENTS_H

#include "common.h"

static __always_inline void frag_key_of(const struct pkt_v4 *p, struct frag_key *k)
{
	k->saddr = p->saddr;
	k->daddr = p->daddr;
	k->id = p->ip_id;
	k->proto = p->proto;
	k->pad = 0;
}

static __always_inline void frag_remember(const struct pkt_v4 *p)
{
	struct frag_key k;
	struct frag_val v = { .sport = p->sport, .dport = p->dport, .verdict = 1 };

	frag_key_of(p, &k);
	bpf_map_update_elem(&bastion_frags, &k, &v, BPF_ANY);
}

/* Fill in the ports of a later fragment; 0 on success, else a reason. */
static __always_inline int frag_resolve(struct pkt_v4 *p)
{
	struct frag_key k;
	struct frag_val *v;

	frag_key_of(p, &k);
	v = bpf_map_lookup_elem(&bastion_frags, &k);
	if (!v || !v->verdict)
		return REASON_FRAGMENT;
	p->sport = v->sport;
	p->dport = v->dport;
	return 0;
}

#endif /* BASTION_FRAGMENTS_H */
