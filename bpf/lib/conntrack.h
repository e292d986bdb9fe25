/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Connection tracking: what makes isolation stateful. A connection opened
 * with the policy's blessing gets an entry keyed by its original 5-tuple;
 * packets in the original direction are ESTABLISHED, packets whose reversed
 * tuple matches are REPLY, ICMP errors about a tracked connection are
 * RELATED. Everything else is NEW and must pass policy.
 *
 * An entry remembers the identities of both ends at open time. If an
 * address changes hands (a container dies, another gets its IP), the
 * identities no longer match and the entry is worthless: a new container
 * never inherits a connection, even before the manager flushes the entry.
 */
#ifndef BASTION_CONNTRACK_H
#define BASTION_CONNTRACK_H

#include "common.h"

#define CT_NEW		0
#define CT_ESTABLISHED	1
#define CT_REPLY	2
#define CT_RELATED	3
#define CT_INVALID	4	/* e.g. a SYN travelling in the reply direction */

#define CT_DEFAULT_TCP_LIFETIME_S	21600	/* 6 h idle for an established TCP connection */
#define CT_DEFAULT_OTHER_LIFETIME_S	60	/* UDP, SCTP, ICMP, unanswered TCP */
#define CT_CLOSING_LIFETIME_S		10	/* after FIN or RST */

static __always_inline __u64 ct_lifetime_ns(const struct bastion_config *cfg, __u8 proto, __u32 flags)
{
	__u32 s;

	if (flags & CT_F_CLOSING)
		return CT_CLOSING_LIFETIME_S * NSEC_PER_SEC;
	if (proto == IPPROTO_TCP && (flags & CT_F_SEEN_REPLY))
		s = cfg && cfg->ct_tcp_lifetime_s ? cfg->ct_tcp_lifetime_s : CT_DEFAULT_TCP_LIFETIME_S;
	else
		s = cfg && cfg->ct_other_lifetime_s ? cfg->ct_other_lifetime_s : CT_DEFAULT_OTHER_LIFETIME_S;
	return (__u64)s * NSEC_PER_SEC;
}

static __always_inline void ct_tuple(const struct pkt_v4 *p, struct ct_key *k)
{
	k->saddr = p->saddr;
	k->daddr = p->daddr;
	k->sport = p->sport;
	k->dport = p->dport;
	k->proto = p->proto;
	k->pad[0] = k->pad[1] = k->pad[2] = 0;
}

/* The tuple a reply would have. ICMP echo keeps its identifier in sport in
 * both directions. */
static __always_inline void ct_reverse(const struct ct_key *k, struct ct_key *r)
{
	r->saddr = k->daddr;
	r->daddr = k->saddr;
	if (k->proto == IPPROTO_ICMP) {
		r->sport = k->sport;
		r->dport = 0;
	} else {
		r->sport = k->dport;
		r->dport = k->sport;
	}
	r->proto = k->proto;
	r->pad[0] = r->pad[1] = r->pad[2] = 0;
}

/* Refresh an entry's deadline, at most once a second per entry so that a
 * busy flow does not bounce the cache line between CPUs on every packet. */
static __always_inline void ct_touch(struct ct_entry *e, const struct pkt_v4 *p, int reply,
				     const struct bastion_config *cfg, __u64 now)
{
	__u32 flags = e->flags;
	__u64 deadline;

	if (reply)
		flags |= CT_F_SEEN_REPLY;
	if (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)))
		flags |= CT_F_CLOSING;
	deadline = now + ct_lifetime_ns(cfg, p->proto, flags);
	if (flags != e->flags) {
		e->flags = flags;
		e->expires = deadline;
	} else if (deadline > e->expires + NSEC_PER_SEC) {
		e->expires = deadline;
	}
}

/* Is an existing entry still ours: alive, and between the same identities? */
static __always_inline int ct_valid(const struct ct_entry *e, __u32 src_id, __u32 dst_id, __u64 now)
{
	return e->expires > now && e->src_id == src_id && e->dst_id == dst_id;
}

/*
 * Classify a packet from identity src_id to identity dst_id. On
 * ESTABLISHED/REPLY/RELATED, *rule_id is the rule that opened the connection
 * and *ct_flags its flags.
 */
static __always_inline int ct_lookup(const struct pkt_v4 *p, __u32 src_id, __u32 dst_id,
				     const struct bastion_config *cfg, __u32 *rule_id)
{
	struct ct_key key, rkey;
	struct ct_entry *e;
	__u64 now = bpf_ktime_get_ns();

	ct_tuple(p, &key);
	e = bpf_map_lookup_elem(&bastion_ct, &key);
	if (e) {
		if (ct_valid(e, src_id, dst_id, now)) {
			ct_touch(e, p, 0, cfg, now);
			*rule_id = e->rule_id;
			return CT_ESTABLISHED;
		}
		/* Expired, or the addresses changed hands: forget it. */
		bpf_map_delete_elem(&bastion_ct, &key);
	}

	ct_reverse(&key, &rkey);
	e = bpf_map_lookup_elem(&bastion_ct, &rkey);
	if (e && ct_valid(e, dst_id, src_id, now)) {
		/* A SYN in the reply direction is a new connection the other way
		 * round dressed up as a reply: never let it through as one. */
		if (p->proto == IPPROTO_TCP &&
		    (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN)
			return CT_INVALID;
		if (p->proto == IPPROTO_ICMP && p->icmp_type != ICMP_ECHOREPLY)
			return CT_INVALID;
		ct_touch(e, p, 1, cfg, now);
		*rule_id = e->rule_id;
		return CT_REPLY;
	}

	if (p->is_icmp_error) {
		/* The inner packet was sent by this packet's destination: it is
		 * either the original direction of a tracked connection or one of
		 * its replies. */
		struct ct_key ikey = {
			.saddr = p->inner_saddr,
			.daddr = p->inner_daddr,
			.sport = p->inner_sport,
			.dport = p->inner_dport,
			.proto = p->inner_proto,
		};

		e = bpf_map_lookup_elem(&bastion_ct, &ikey);
		if (e && e->expires > now)
			return CT_RELATED;
		ct_reverse(&ikey, &rkey);
		e = bpf_map_lookup_elem(&bastion_ct, &rkey);
		if (e && e->expires > now)
			return CT_RELATED;
		return CT_INVALID;
	}
	return CT_NEW;
}

static __always_inline void ct_create(const struct pkt_v4 *p, __u32 src_id, __u32 dst_id, __u32 rule_id,
				      __u32 flags, const struct bastion_config *cfg)
{
	struct ct_key key;
	struct ct_entry e = {
		.src_id = src_id,
		.dst_id = dst_id,
		.rule_id = rule_id,
		.flags = flags,
	};

	if (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)))
		e.flags |= CT_F_CLOSING;
	e.expires = bpf_ktime_get_ns() + ct_lifetime_ns(cfg, p->proto, e.flags);
	ct_tuple(p, &key);
	bpf_map_update_elem(&bastion_ct, &key, &e, BPF_ANY);
}

#endif /* BASTION_CONNTRACK_H */
