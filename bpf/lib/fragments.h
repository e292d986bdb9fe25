/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv4 fragments. Only the first fragment carries the L4 header, so policy
 * and conntrack can only decide on it. Its verdict, allowed or dropped, and
 * its ports are kept for FRAG_LIFETIME_S under (saddr, daddr, IP id, proto)
 * and the hook that saw it (ifindex, direction); later fragments borrow them
 * and go through conntrack like any other packet of the flow.
 *
 * Why all of it: an entry that only said "allowed" and never expired let a
 * later fragment whose own first fragment was denied borrow the verdict of
 * an earlier allowed datagram with the same IP id. Now a denied first
 * fragment overwrites that entry with its own verdict, an entry dies with
 * the kernel's reassembly timeout, and a fragment seen by one hook never
 * borrows another hook's entry.
 *
 * Deterministic, whatever the timing: a later fragment with no live entry
 * (it came before its first fragment, or long after it) is dropped
 * (REASON_FRAGMENT); that is the classic way to slip a payload past a port
 * filter. Overlapping fragments are not inspected here: a fragment's offset
 * is a multiple of 8 bytes, so none can rewrite the ports the verdict was
 * taken on, and the receiving kernel discards a datagram whose fragments
 * overlap (RFC 5722 behaviour, Linux since 4.19).
 */
#ifndef BASTION_FRAGMENTS_H
#define BASTION_FRAGMENTS_H

#include "common.h"

static __always_inline void frag_key_of(const struct pkt_v4 *p, const struct ctx_info *ci, struct frag_key *k)
{
	k->saddr = p->saddr;
	k->daddr = p->daddr;
	k->id = p->ip_id;
	k->proto = p->proto;
	k->trace = ci->trace;
	k->ifindex = ci->ifindex;
}

/* Remember a first fragment's verdict for its later fragments. */
static __always_inline void frag_remember(const struct pkt_v4 *p, const struct ctx_info *ci, int allowed)
{
	struct frag_key k;
	struct frag_val v = {
		.expires = bpf_ktime_get_coarse_ns() + FRAG_LIFETIME_S * NSEC_PER_SEC,
		.sport = p->sport,
		.dport = p->dport,
		.verdict = allowed ? FRAG_VERDICT_ALLOWED : FRAG_VERDICT_DROPPED,
	};

	frag_key_of(p, ci, &k);
	bpf_map_update_elem(&bastion_frags, &k, &v, BPF_ANY);
}

/* Fill in the ports of a later fragment; 0 on success, else -REASON_FRAGMENT. */
static __always_inline int frag_resolve(struct pkt_v4 *p, const struct ctx_info *ci)
{
	struct frag_key k;
	struct frag_val *v;

	frag_key_of(p, ci, &k);
	v = bpf_map_lookup_elem(&bastion_frags, &k);
	if (!v || v->verdict != FRAG_VERDICT_ALLOWED || v->expires <= bpf_ktime_get_coarse_ns())
		return -REASON_FRAGMENT;
	p->sport = v->sport;
	p->dport = v->dport;
	return 0;
}

#endif /* BASTION_FRAGMENTS_H */
