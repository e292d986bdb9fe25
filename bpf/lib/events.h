/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Flow events and counters.
 *
 * Every drop, every first packet of an allowed connection and every ARP
 * answer produces one flow_event in the ring buffer, within a rate limit per
 * (endpoint, verdict, reason) (see event_admit); the agent turns them into
 * JSON lines with container names. When the ring buffer is full the event is
 * lost and counted (REASON_EVENTS_LOST); the per-reason counter still counts
 * the packet, so the numbers stay true under a flood (an nmap sweep, say).
 * The reader is woken at most once a millisecond per CPU (see
 * events_wakeup_flags).
 */
#ifndef BASTION_EVENTS_H
#define BASTION_EVENTS_H

#include "common.h"

static __always_inline void count_reason(__u32 reason, __u32 bytes)
{
	struct counter *c = bpf_map_lookup_elem(&bastion_counter, &reason);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

/* Per-endpoint traffic, per CPU: no atomics needed. */
static __always_inline void count_endpoint(__u32 ifindex, __u32 bytes, int tx, int dropped)
{
	struct ep_stats *s = bpf_map_lookup_elem(&bastion_ep_stat, &ifindex);

	if (!s)
		return;
	if (dropped) {
		s->drops++;
	} else if (tx) {
		s->tx_packets++;
		s->tx_bytes += bytes;
	} else {
		s->rx_packets++;
		s->rx_bytes += bytes;
	}
}

/* The endpoints and addresses of one event, filled by whoever decides. */
struct flow_desc {
	__u32 src_id;
	__u32 dst_id;
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags;		/* TCP_FLAG_* of the packet */
	__be16 ethertype;
	__u32 rule_id;		/* the rule that allowed it on the deciding side (egress, or for to_container ingress) */
	__u32 ingress_rule_id;	/* a local receiver's ingress rule (from_container) */
	__u8 flags;		/* FLOW_F_* */
	__u8 pad[3];
	__be32 tunnel_saddr;	/* from_overlay: the outer source, so a drop names the node it came from */
};

#ifndef CLOCK_MONOTONIC
#define CLOCK_MONOTONIC		1
#endif
#ifndef BPF_F_TIMER_CPU_PIN
#define BPF_F_TIMER_CPU_PIN	(1ULL << 1)
#endif

/*
 * Waking the reader. By default a ring buffer record wakes the consumer
 * whenever the consumer had caught up, which for a reader that keeps up is
 * every record: an irq_work self-IPI per event (in a VM, an APIC write that
 * exits to the hypervisor) and one reader wake-up per event. perf during the
 * bench's connection test (one event per new connection) showed
 * native_write_msr under bpf_ringbuf_submit as the largest item of
 * from_container, about 5 us per event, on top of the daemon waking up
 * 10,000 times a second.
 *
 * So records are committed without a wake-up and a per-CPU timer wakes the
 * reader once, EVENTS_WAKEUP_DELAY_NS after the first record nobody has woken
 * it for: at most ~1,000 wake-ups a second per CPU, and no event waits longer
 * than that delay. When a lot is pending (a flood of drops), the reader is
 * woken at once so the buffer does not fill up. Where the timer cannot be
 * used (no slot for this CPU, timer refused), the record wakes the reader
 * the default way.
 *
 * The slot is per CPU and the timer is pinned to the CPU that armed it: the
 * programs (tc, BH disabled) and the timer callback (softirq) never run at
 * the same time on one CPU, so `armed` needs no atomics, and every record this
 * CPU committed before the callback ran is in the buffer when it wakes the
 * reader.
 */
#define EVENTS_WAKEUP_DELAY_NS	1000000ULL		/* 1 ms */
#define EVENTS_WAKEUP_NOW_BYTES	(BASTION_EVENTS_BYTES / 8)

static int events_wakeup_fire(void *map, __u32 *key, struct events_wakeup *w)
{
	void *rec;

	w->armed = 0;
	/* No helper wakes a ring buffer by itself: commit an empty record
	 * that the reader skips (a discard), with a forced wake-up. */
	rec = bpf_ringbuf_reserve(&bastion_events, 8, 0);
	if (rec)
		bpf_ringbuf_discard(rec, BPF_RB_FORCE_WAKEUP);
	/* A full buffer: the reader was woken when it passed
	 * EVENTS_WAKEUP_NOW_BYTES. */
	return 0;
}

/* The flags to commit a record with (see above). */
static __always_inline __u64 events_wakeup_flags(void)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct events_wakeup *w;

	if (bpf_ringbuf_query(&bastion_events, BPF_RB_AVAIL_DATA) >= EVENTS_WAKEUP_NOW_BYTES)
		return BPF_RB_FORCE_WAKEUP;
	w = bpf_map_lookup_elem(&bastion_wakeup, &cpu);
	if (!w)
		return 0;
	if (w->armed)
		return BPF_RB_NO_WAKEUP;
	/* First use of this slot: init; later: -EBUSY, harmless. */
	bpf_timer_init(&w->timer, &bastion_wakeup, CLOCK_MONOTONIC);
	if (bpf_timer_set_callback(&w->timer, events_wakeup_fire) ||
	    bpf_timer_start(&w->timer, EVENTS_WAKEUP_DELAY_NS, BPF_F_TIMER_CPU_PIN))
		return 0;
	w->armed = 1;
	return BPF_RB_NO_WAKEUP;
}

/*
 * The event rate limit. A flood (a SYN flood, an ARP flood: hundreds of
 * thousands of packets a second) would otherwise be as many events, JSON
 * lines and megabytes of daemon memory: 720,000 lines for a 10 s SYN flood,
 * a full core and 21 % of the events lost without a word for an ARP flood.
 * So each (endpoint, verdict, reason) gets events_per_sec events per
 * one-second window: the start of a burst is reported in full, the rest is
 * counted (REASON_EVENTS_SUPPRESSED, exact) and the first event of a later
 * window says how many of its kind were held back before it (`suppressed`);
 * what no later event reports (the tail of a burst) the agent reads from
 * bastion_event_rl and reports as a summary.
 * The packet counters (bastion_counter, bastion_ep_stat) still count every
 * packet. Concurrent CPUs may each let one more through at a window's edge:
 * a limit, not an exact quota.
 */
/* The value a new event_rl key starts from (read-only data: not on any frame). */
static const struct event_rl event_rl_zero = {};

static __always_inline int event_admit(const struct ctx_info *ci, const struct flow_desc *fd, __u8 verdict,
				       __u8 reason, const struct bastion_config *cfg, __u32 *suppressed)
{
	struct event_rl_key key = { .ifindex = ci->ifindex, .verdict = verdict, .reason = reason };
	__u32 budget = cfg && cfg->events_per_sec ? cfg->events_per_sec : EVENTS_DEFAULT_PER_SEC;
	__u64 now = bpf_ktime_get_coarse_ns();
	struct event_rl *rl;

	*suppressed = 0;
	rl = bpf_map_lookup_elem(&bastion_event_rl, &key);
	if (!rl) {
		/* A new key starts from the zero value in .rodata and is filled in
		 * place: a 40-byte value on this frame took from_container's deepest
		 * call chain (from_container, flow_summarise, emit_event) past the
		 * verifier's 512 bytes of combined stack. Another CPU that finds the
		 * zeroed entry first starts the window itself: one more event at
		 * most (a limit, not an exact quota). */
		bpf_map_update_elem(&bastion_event_rl, &key, &event_rl_zero, BPF_NOEXIST);
		rl = bpf_map_lookup_elem(&bastion_event_rl, &key);
		if (rl) {
			rl->window_start = now;
			rl->emitted = 1;
		}
		return 1;
	}
	if (now - rl->window_start >= NSEC_PER_SEC) {
		*suppressed = rl->suppressed;
		rl->window_start = now;
		rl->emitted = 1;
		rl->suppressed = 0;
		return 1;
	}
	if (rl->emitted < budget) {
		rl->emitted++;
		*suppressed = rl->suppressed;
		rl->suppressed = 0;
		return 1;
	}
	__sync_fetch_and_add(&rl->suppressed, 1);
	/* The last one held back, for the agent's summary of the burst's tail. */
	rl->src_id = fd->src_id;
	rl->dst_id = fd->dst_id;
	rl->saddr = fd->saddr;
	rl->daddr = fd->daddr;
	rl->sport = fd->sport;
	rl->dport = fd->dport;
	rl->proto = fd->proto;
	rl->trace = ci->trace;
	rl->ethertype = fd->ethertype;
	count_reason(REASON_EVENTS_SUPPRESSED, 0);
	return 0;
}

/*
 * A BPF subprogram, not inlined: a program has dozens of drop sites, and
 * with the rate limit inlined into each the two programs grew from 7,572
 * and 5,744 instructions to 11,379 and 7,886; as one function they are
 * 3,382 and 2,527. An event is rare next to a packet: the call costs
 * nothing that shows.
 */
static __attribute__((noinline)) int emit_event(const struct ctx_info *ci, const struct flow_desc *fd,
				       __u8 verdict, __u8 reason)
{
	const struct bastion_config *cfg = get_config();
	struct flow_event *ev;
	__u32 suppressed;

	if (!event_admit(ci, fd, verdict, reason, cfg, &suppressed))
		return 0;
	ev = bpf_ringbuf_reserve(&bastion_events, sizeof(*ev), 0);
	if (!ev) {
		/* The reader is behind: say so (status, metrics), never silently. */
		count_reason(REASON_EVENTS_LOST, 0);
		return 0;
	}
	ev->ts_ns = bpf_ktime_get_ns();
	ev->src_id = fd->src_id;
	ev->dst_id = fd->dst_id;
	ev->saddr = fd->saddr;
	ev->daddr = fd->daddr;
	ev->sport = fd->sport;
	ev->dport = fd->dport;
	ev->proto = fd->proto;
	ev->verdict = verdict;
	ev->reason = reason;
	ev->trace = ci->trace;
	ev->ifindex = ci->ifindex;
	ev->rule_id = fd->rule_id;
	ev->pkt_len = ci->pkt_len > 0xffff ? 0xffff : ci->pkt_len;
	ev->ethertype = fd->ethertype;
	ev->suppressed = suppressed;
	ev->ingress_rule_id = fd->ingress_rule_id;
	ev->tcp_flags = fd->tcp_flags;
	ev->flags = fd->flags;
	ev->pad = 0;
	ev->tunnel_saddr = fd->tunnel_saddr;
	ev->pad2 = 0;
	bpf_ringbuf_submit(ev, events_wakeup_flags());
	return 1;
}

/*
 * The one way a program refuses a packet. In audit mode the packet goes on
 * (TC_ACT_OK) and the event says AUDIT: what would have been dropped.
 *
 * A policy denial (policy-denied, host-denied) arrives here only when
 * policy_verdict (lib/verdict.h) found the endpoint whose policy refused it
 * enforced: audit mode is decided there, per endpoint, and the deciding
 * endpoint's own mode must not overrule it (an audited sender would
 * otherwise pass what an enforced receiver refuses).
 */
static __always_inline int deny(const struct ctx_info *ci, const struct flow_desc *fd, __u8 reason)
{
	if (ci->audit && reason != REASON_POLICY_DENIED && reason != REASON_HOST_DENIED) {
		count_reason(REASON_AUDITED, ci->pkt_len);
		emit_event(ci, fd, VERDICT_AUDIT, reason);
		return TC_ACT_OK;
	}
	count_reason(reason, ci->pkt_len);
	count_endpoint(ci->ifindex, ci->pkt_len, 0, 1);
	emit_event(ci, fd, VERDICT_DROPPED, reason);
	return TC_ACT_SHOT;
}

#endif /* BASTION_EVENTS_H */
