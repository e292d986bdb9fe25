/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Allowed flows, summarised in the kernel.
 *
 * An event per new allowed connection was the visibility's whole cost: a
 * ring buffer record, a wake-up, and in the daemon a record, a JSON line and
 * a history line, for every connection. At 15,000 new connections a second
 * that was about a fifth of a 2-core machine, and new connections per second
 * at 0.67-0.90 x the plain bridge (bench, conn/s). And every one of those
 * events said the same thing as the one before: web may reach api on 8080.
 *
 * So a new connection that policy allows (or that audit mode lets through)
 * is counted per key (source identity, destination identity, protocol,
 * destination port; audited ones under a key of their own) in
 * bastion_flow_sum. The key's first connection is also an event, at once:
 * a new dependency is seen the moment it appears. Later ones cost a hash
 * lookup and an atomic add; the agent reads the map every few seconds and
 * reports each key that moved as one summary record (how many, first and
 * last seen). Drops stay per-packet events (within the rate limit).
 *
 * Nothing that learning needs is lost: every key has its first event or,
 * when the rate limit or a full ring buffer kept that back, a count of 1
 * more in the map, which the agent reports as the key's summary.
 */
#ifndef BASTION_SUMMARY_H
#define BASTION_SUMMARY_H

#include "common.h"
#include "events.h"

/*
 * A BPF subprogram (like emit_event): it runs once per new connection,
 * never per packet, and keeps the two programs small.
 */
static __attribute__((noinline)) void flow_summarise(const struct ctx_info *ci, struct flow_desc *fd, __u8 audit_reason)
{
	struct flow_sum_key key = {
		.src_id = fd->src_id,
		.dst_id = fd->dst_id,
		.dport = fd->proto == IPPROTO_ICMP ? 0 : fd->dport,
		.proto = fd->proto,
		.flags = audit_reason ? FLOW_SUM_F_AUDIT : 0,
	};
	__u64 now = bpf_ktime_get_ns();
	struct flow_sum *s;
	struct flow_sum fresh = {};

	s = bpf_map_lookup_elem(&bastion_flow_sum, &key);
	if (s) {
		__sync_fetch_and_add(&s->count, 1);
		/* The last connection's details: plain stores, a reader may see
		 * two connections' fields mixed, which a summary can live with. */
		s->last_ns = now;
		s->saddr = fd->saddr;
		s->daddr = fd->daddr;
		s->sport = fd->sport;
		s->ifindex = ci->ifindex;
		return;
	}
	fresh.first_ns = now;
	fresh.last_ns = now;
	fresh.saddr = fd->saddr;
	fresh.daddr = fd->daddr;
	fresh.sport = fd->sport;
	fresh.reason = audit_reason;
	fresh.trace = ci->trace;
	fresh.ifindex = ci->ifindex;
	fresh.rule_id = fd->rule_id;
	fresh.ingress_rule_id = fd->ingress_rule_id;
	/* The key's first connection is an event; if it could not be (rate
	 * limit, full ring buffer), the map counts it instead. */
	if (!emit_event(ci, fd, audit_reason ? VERDICT_AUDIT : VERDICT_ALLOWED, audit_reason ? audit_reason : REASON_ALLOWED_NEW))
		fresh.count = 1;
	if (bpf_map_update_elem(&bastion_flow_sum, &key, &fresh, BPF_NOEXIST)) {
		/* Another CPU made the key meanwhile: count this one there. */
		s = bpf_map_lookup_elem(&bastion_flow_sum, &key);
		if (s)
			__sync_fetch_and_add(&s->count, fresh.count);
	}
}

#endif /* BASTION_SUMMARY_H */
