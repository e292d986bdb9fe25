/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Flow events and counters.
 *
 * Every drop, every first packet of an allowed connection and every ARP
 * answer produces one flow_event in the ring buffer; the agent turns them
 * into JSON lines with container names. When the ring buffer is full the
 * event is lost but the per-reason counter still counts the packet, so the
 * numbers stay true under a flood (an nmap sweep, say).
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
	__u8 pad;
	__be16 ethertype;
	__u32 rule_id;
};

static __always_inline void emit_event(const struct ctx_info *ci, const struct flow_desc *fd,
				       __u8 verdict, __u8 reason)
{
	struct flow_event *ev;

	ev = bpf_ringbuf_reserve(&bastion_events, sizeof(*ev), 0);
	if (!ev)
		return;
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
	ev->pad = 0;
	bpf_ringbuf_submit(ev, 0);
}

/*
 * The one way a program refuses a packet. In audit mode the packet goes on
 * (TC_ACT_OK) and the event says AUDIT: what would have been dropped.
 */
static __always_inline int deny(const struct ctx_info *ci, const struct flow_desc *fd, __u8 reason)
{
	if (ci->audit) {
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
