/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * A packet from another node, decapsulated: what from_overlay (the VXLAN
 * device's ingress) and from_underlay (the underlay interface's ingress,
 * for the packets it decapsulates itself) do with it once they know the
 * claimed identity (the VNI) and the sending node (the outer source), given
 * as a tunnel key either way.
 *
 *   identity    the claim is believed only for the inner source address's
 *               remote endpoint, from the node that holds it (lib/encap.h)
 *   isolation   conntrack, then the receiving endpoint's ingress policy for
 *               a new connection (the sender's egress was checked on its
 *               node, before encapsulation), through the shared
 *               conn_verdict: an established connection meets the policy
 *               again after every change (ct_recheck, policy_epoch), audit
 *               mode is the receiver's own (audited()), and an allowed new
 *               connection is summarised (lib/summary.h) with the receiver's
 *               ingress rule as its rule, as to_container does
 *   forwarding  straight into the receiving container (bpf_redirect_peer):
 *               no bridge, so no other container sees it
 *
 * Everything else (ARP, IPv6, broadcasts, addresses of no local endpoint) is
 * dropped with its reason: nothing the tunnel brings reaches the host stack.
 */
#ifndef BASTION_OVERLAY_H
#define BASTION_OVERLAY_H

#include "common.h"
#include "events.h"
#include "policy.h"
#include "conntrack.h"
#include "verdict.h"
#include "fragments.h"
#include "forward.h"
#include "encap.h"

/* Everything up to the verdict; fills *p and *ep for the caller. */
static __always_inline int ipv4_from_overlay_verdict(struct __sk_buff *skb, struct ctx_info *ci, struct flow_desc *fd,
						     const struct bastion_config *cfg, const struct bpf_tunnel_key *key,
						     int l2_multicast, struct pkt_v4 *p, struct endpoint_info **dst)
{
	struct remote_endpoint *src = NULL;
	struct conn_ends c = {};
	struct endpoint_info *ep;
	int reason;

	reason = parse_ipv4(skb, p);
	fd->saddr = p->saddr;
	fd->daddr = p->daddr;
	fd->sport = p->sport;
	fd->dport = p->dport;
	fd->proto = p->proto;
	fd->tcp_flags = p->proto == IPPROTO_TCP ? p->tcp_flags : 0;
	if (reason)
		return -reason;
	if (l2_multicast || is_broadcast_v4(p->daddr))
		return -REASON_BROADCAST;
	reason = tunnel_source(p->saddr, key, &src);
	if (reason || !src)
		return -(reason ? reason : REASON_TUNNEL_UNKNOWN_SOURCE);

	ep = bpf_map_lookup_elem(&bastion_ep_ip, &p->daddr);
	if (!ep)
		return -REASON_NOT_FOR_ENDPOINT;
	/* From here on the packet is the receiving endpoint's business: its
	 * counters, its events, its mode. */
	*dst = ep;
	ci->ep = ep;
	ci->ifindex = ep->ifindex;
	if (ep->flags & EP_F_AUDIT)
		ci->audit = 1;
	fd->dst_id = ep->identity;

	if (p->frag == FRAG_LATER) {
		reason = frag_resolve(p, ci);
		if (IS_ERR(reason))
			return reason;
		fd->sport = p->sport;
		fd->dport = p->dport;
	}
	/* The sender's egress was decided on its own node, before it was
	 * encapsulated: here the receiver's ingress decides. */
	c.src_id = src->identity;
	c.dst_id = ep->identity;
	c.receiver = ep;
	c.owner_id = ep->identity;
	return conn_verdict(ci, fd, p, &c, cfg);
}

static __always_inline int ipv4_from_overlay(struct __sk_buff *skb, struct ctx_info *ci, struct flow_desc *fd,
					     const struct bastion_config *cfg, const struct bpf_tunnel_key *key,
					     int l2_multicast)
{
	struct endpoint_info *ep = NULL;
	struct pkt_v4 p = {};
	int ret;

	ret = ipv4_from_overlay_verdict(skb, ci, fd, cfg, key, l2_multicast, &p, &ep);
	/* A first fragment's verdict is its later fragments' (only once the
	 * sender was believed and the receiver is local). */
	if (p.frag == FRAG_FIRST && ep)
		frag_remember(&p, ci, !IS_ERR(ret));
	if (IS_ERR(ret) || !ep)
		return deny(ci, fd, IS_ERR(ret) ? -ret : REASON_NOT_FOR_ENDPOINT);

	count_endpoint(ep->ifindex, ci->pkt_len, 0, 0);
	count_reason(REASON_DECAPSULATED, ci->pkt_len);
	return redirect_to_endpoint(skb, ep);
}

/*
 * The decapsulated frame (its Ethernet header first), from the node and
 * with the identity `key` names. Returns the tc verdict.
 */
static __always_inline int overlay_deliver(struct __sk_buff *skb, struct ctx_info *ci, struct flow_desc *fd,
					   const struct bastion_config *cfg, const struct bpf_tunnel_key *key)
{
	struct ethhdr *eth;
	void *data, *data_end;
	__be16 proto;

	pull_headers(skb);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return deny(ci, fd, REASON_MALFORMED);
	proto = eth->h_proto;
	fd->ethertype = proto;
	if (skb->vlan_present || proto == ETH_P_8021Q_BE || proto == ETH_P_8021AD_BE)
		return deny(ci, fd, REASON_UNSUPPORTED_L3);
	if (proto == bpf_htons(ETH_P_IP))
		return ipv4_from_overlay(skb, ci, fd, cfg, key, mac_is_multicast(eth->h_dest));
	/* ARP never crosses the tunnel: each node answers for its peers itself. */
	if (proto == bpf_htons(ETH_P_ARP))
		return deny(ci, fd, REASON_ARP_UNSOLICITED);
	if (proto == bpf_htons(ETH_P_IPV6))
		return deny(ci, fd, REASON_IPV6);
	return deny(ci, fd, REASON_UNSUPPORTED_L3);
}

#endif /* BASTION_OVERLAY_H */
