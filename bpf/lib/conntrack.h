/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Connection tracking: what makes isolation stateful. A connection opened
 * with the policy's blessing gets one entry, found from either direction
 * (see ct_key_of); packets in the original direction are ESTABLISHED,
 * packets in the other direction are REPLY, ICMP errors about a tracked
 * connection from one of its ends (or its path) are RELATED. Everything else
 * is NEW and must pass policy.
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

/* The clock conntrack runs on. Deadlines have a granularity of a second
 * (see ct_touch), so the coarse monotonic clock (last tick, no TSC read) is
 * precise enough and is read on every packet: it is the same CLOCK_MONOTONIC
 * time base as bpf_ktime_get_ns(), at most a tick behind. */
static __always_inline __u64 ct_now(void)
{
	return bpf_ktime_get_coarse_ns();
}

/*
 * One entry per connection, under one key for both directions: the tuple
 * with the lower (address, port) end first. A packet then needs one lookup
 * whichever way it travels (before: a reply missed on its own tuple and hit
 * on the reversed one, two hash walks per reply packet). CT_F_KEY_SWAPPED in
 * the entry says whether the opening packet's tuple was swapped to make the
 * key; a packet is in the original direction when its own tuple was swapped
 * the same way. ICMP echo keeps its identifier in sport in both directions
 * (dport 0), so only its addresses are ordered.
 *
 * Returns 1 when the packet's tuple was swapped.
 */
static __always_inline int ct_key_of(__be32 saddr, __be32 daddr, __be16 sport, __be16 dport,
				     __u8 proto, struct ct_key *k)
{
	__u32 s = bpf_ntohl(saddr), d = bpf_ntohl(daddr);
	int swap;

	if (proto == IPPROTO_ICMP)
		swap = s > d;
	else
		swap = s > d || (s == d && bpf_ntohs(sport) > bpf_ntohs(dport));
	if (swap) {
		k->saddr = daddr;
		k->daddr = saddr;
		if (proto != IPPROTO_ICMP) {
			k->sport = dport;
			k->dport = sport;
		} else {
			k->sport = sport;
			k->dport = dport;
		}
	} else {
		k->saddr = saddr;
		k->daddr = daddr;
		k->sport = sport;
		k->dport = dport;
	}
	k->proto = proto;
	k->pad[0] = k->pad[1] = k->pad[2] = 0;
	return swap;
}

/* Refresh an entry's deadline, at most once a second per entry so that a
 * busy flow does not bounce the cache line between CPUs on every packet:
 * the entry is written only when its flags change or its deadline has moved
 * by more than a second. */
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

/* Conntrack entries an endpoint may hold (see struct ct_use). */
static __always_inline __s64 ct_limit(const struct bastion_config *cfg)
{
	return cfg && cfg->ct_per_endpoint ? cfg->ct_per_endpoint : CT_DEFAULT_PER_ENDPOINT;
}

static __always_inline void ct_uncharge(__u32 owner_id)
{
	struct ct_use *u = bpf_map_lookup_elem(&bastion_ct_use, &owner_id);

	if (u)
		__sync_fetch_and_add(&u->entries, -1);
}

/* Charge one entry to `owner_id`; 0 or -REASON_CT_LIMIT. */
static __always_inline int ct_charge(__u32 owner_id, const struct bastion_config *cfg)
{
	struct ct_use *u = bpf_map_lookup_elem(&bastion_ct_use, &owner_id);

	if (!u) {
		struct ct_use zero = {};

		bpf_map_update_elem(&bastion_ct_use, &owner_id, &zero, BPF_NOEXIST);
		u = bpf_map_lookup_elem(&bastion_ct_use, &owner_id);
		if (!u)
			return -REASON_CT_FULL;
	}
	/* Checked, then added: CPUs racing may overshoot by one each. */
	if (u->entries >= ct_limit(cfg))
		return -REASON_CT_LIMIT;
	__sync_fetch_and_add(&u->entries, 1);
	return 0;
}

/* Remove an entry and give its charge back, once: only the CPU whose delete
 * succeeds uncharges. `owner_id` is read before the delete (a preallocated
 * element is reused as soon as it is freed). */
static __always_inline void ct_delete(struct ct_key *key, __u32 owner_id)
{
	if (bpf_map_delete_elem(&bastion_ct, key) == 0)
		ct_uncharge(owner_id);
}

/* ICMP errors that may come from a router on the way rather than from the
 * far end itself: anything but port and protocol unreachable. */
static __always_inline int icmp_is_path_error(const struct pkt_v4 *p)
{
	if (p->icmp_type != ICMP_DEST_UNREACH)
		return 1;
	return p->icmp_code != ICMP_PORT_UNREACH && p->icmp_code != ICMP_PROT_UNREACH;
}

/*
 * An ICMP error names the packet it is about (its inner header). It is
 * RELATED, and passes, only when it makes sense for that packet's trip:
 *
 *  - it goes back to the packet's sender: the error's destination is the
 *    inner source, and its identity is the one the entry records for that
 *    end;
 *  - it comes from the packet's destination (the error's source is the inner
 *    destination, with the identity the entry records for that end), or from
 *    a router on the way: a path error (time exceeded, fragmentation needed,
 *    net or host unreachable) that reached us through the gateway, for a
 *    connection whose far end is not a local container (local containers
 *    talk veth to veth: there is no router between them).
 *
 * Anything else is a third party dressing a forged error up in a live
 * tuple (a connected UDP socket then fails with ECONNREFUSED, a path MTU
 * drops to 552): icmp-unrelated. `via_gateway`: the frame's source MAC is
 * the gateway's (to_container only; a container is never a router).
 */
static __always_inline int ct_related(const struct pkt_v4 *p, __u32 src_id, __u32 dst_id, int via_gateway,
				      __u64 now)
{
	struct ct_key key;
	struct ct_entry *e;
	__u32 inner_sender, inner_receiver;
	int swapped;

	swapped = ct_key_of(p->inner_saddr, p->inner_daddr, p->inner_sport, p->inner_dport,
			    p->inner_proto, &key);
	e = bpf_map_lookup_elem(&bastion_ct, &key);
	if (!e || e->expires <= now)
		return -REASON_ICMP_UNRELATED;
	/* The inner packet travelled in the entry's original direction when its
	 * tuple was swapped the way the opener's was. */
	if (swapped == !!(e->flags & CT_F_KEY_SWAPPED)) {
		inner_sender = e->src_id;
		inner_receiver = e->dst_id;
	} else {
		inner_sender = e->dst_id;
		inner_receiver = e->src_id;
	}
	if (p->daddr != p->inner_saddr || dst_id != inner_sender)
		return -REASON_ICMP_UNRELATED;
	if (p->saddr == p->inner_daddr && src_id == inner_receiver)
		return CT_RELATED;
	if (via_gateway && icmp_is_path_error(p) && !bpf_map_lookup_elem(&bastion_ep_ip, &p->inner_daddr))
		return CT_RELATED;
	return -REASON_ICMP_UNRELATED;
}

/* The entry a packet of an established connection matched, for a caller
 * that judges the connection again after a policy change (verdict.h). */
struct ct_found {
	struct ct_entry *e;	/* NULL unless ESTABLISHED or REPLY */
	struct ct_key key;
	int reply;		/* the packet travels in the reply direction */
};

/*
 * Classify a packet from identity src_id to identity dst_id: CT_NEW,
 * CT_ESTABLISHED, CT_REPLY, CT_RELATED, or -REASON_* to drop it. On
 * ESTABLISHED/REPLY, *rule_id is the rule that opened the connection and
 * *found the entry.
 */
static __always_inline int ct_lookup(const struct pkt_v4 *p, __u32 src_id, __u32 dst_id,
				     const struct bastion_config *cfg, int via_gateway, __u32 *rule_id,
				     struct ct_found *found)
{
	struct ct_key key;
	struct ct_entry *e;
	__u64 now = ct_now();
	int swapped, reply;

	/* An error is about another packet: only its inner header counts. */
	if (p->is_icmp_error)
		return ct_related(p, src_id, dst_id, via_gateway, now);

	swapped = ct_key_of(p->saddr, p->daddr, p->sport, p->dport, p->proto, &key);
	e = bpf_map_lookup_elem(&bastion_ct, &key);
	if (!e)
		return CT_NEW;
	reply = swapped != !!(e->flags & CT_F_KEY_SWAPPED);
	/* for the flow event, whatever the verdict: a drop of a SYN dressed up
	 * as a reply says it travelled the reply way */
	found->reply = reply;
	/* An entry is ours while it is alive and between the same identities,
	 * in the direction the packet travels. Identities follow addresses, so
	 * an address that changed hands fails this either way round: the entry
	 * is dead, forget it. */
	if (e->expires <= now ||
	    e->src_id != (reply ? dst_id : src_id) || e->dst_id != (reply ? src_id : dst_id)) {
		ct_delete(&key, e->owner_id);
		return CT_NEW;
	}
	if (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN) {
		/* A SYN on a closing connection opens a new one on the same tuple
		 * (ports are reused quickly): it gets a policy verdict and an
		 * entry of its own, in whichever direction. A SYN in the reply
		 * direction of a live connection is a new connection the other
		 * way round dressed up as a reply: never let it through as one. A
		 * SYN in the original direction is a retransmission. */
		if (e->flags & CT_F_CLOSING)
			return CT_NEW;
		if (reply)
			return -REASON_CT_INVALID;
		*rule_id = e->rule_id;
		found->e = e;
		found->key = key;
		found->reply = 0;
		return CT_ESTABLISHED;
	}
	if (reply && p->proto == IPPROTO_ICMP && p->icmp_type != ICMP_ECHOREPLY)
		return -REASON_CT_INVALID;
	ct_touch(e, p, reply, cfg, now);
	*rule_id = e->rule_id;
	found->e = e;
	found->key = key;
	found->reply = reply;
	return reply ? CT_REPLY : CT_ESTABLISHED;
}

/*
 * Open an entry for a connection policy allowed, charged to `owner_id` (the
 * local endpoint whose program decided). 0, or -REASON_CT_LIMIT when that
 * endpoint holds its share already, -REASON_CT_FULL when the table is full.
 */
static __always_inline int ct_create(const struct pkt_v4 *p, __u32 src_id, __u32 dst_id, __u32 rule_id,
				     __u32 flags, __u32 owner_id, const struct bastion_config *cfg)
{
	struct ct_key key;
	struct ct_entry *old;
	struct ct_entry e = {
		.src_id = src_id,
		.dst_id = dst_id,
		.rule_id = rule_id,
		.flags = flags,
		.owner_id = owner_id,
		/* allowed by the policy of this epoch */
		.policy_epoch = cfg ? cfg->policy_epoch : 0,
	};
	int ret;

	if (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)))
		e.flags |= CT_F_CLOSING;
	e.expires = ct_now() + ct_lifetime_ns(cfg, p->proto, e.flags);
	if (ct_key_of(p->saddr, p->daddr, p->sport, p->dport, p->proto, &key))
		e.flags |= CT_F_KEY_SWAPPED;
	/* A closing or dead entry on the same tuple makes way (and gives its
	 * charge back) for the new connection. */
	old = bpf_map_lookup_elem(&bastion_ct, &key);
	if (old)
		ct_delete(&key, old->owner_id);
	ret = ct_charge(owner_id, cfg);
	if (IS_ERR(ret))
		return ret;
	ret = bpf_map_update_elem(&bastion_ct, &key, &e, BPF_NOEXIST);
	if (ret) {
		ct_uncharge(owner_id);
		/* Another CPU opened the same connection meanwhile: it exists. */
		return ret == -17 /* EEXIST */ ? 0 : -REASON_CT_FULL;
	}
	return 0;
}

#endif /* BASTION_CONNTRACK_H */
