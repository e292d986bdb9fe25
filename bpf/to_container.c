// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * to_container: tc egress of a container's host-side veth, i.e. every packet
 * the bridge hands to the container. Traffic from other managed containers
 * never comes this way (it is forwarded veth to veth and checked by the
 * sender's from_container), so what arrives here is from the host, from
 * unmanaged containers or from the world, and is checked against the
 * container's ingress policy. Frames flooded by the bridge for somebody else
 * stop here, which is what keeps a sniffer blind.
 */
#include "lib/common.h"
#include "lib/events.h"
#include "lib/srccheck.h"
#include "lib/arp.h"
#include "lib/policy.h"
#include "lib/conntrack.h"
#include "lib/verdict.h"
#include "lib/fragments.h"

/* Everything up to the verdict; fills *p for the caller. */
static __always_inline int ipv4_to_container_verdict(struct __sk_buff *skb, const struct ctx_info *ci,
						     struct flow_desc *fd, const struct bastion_config *cfg,
						     int for_us_l2, int l2_multicast, int via_gateway,
						     struct pkt_v4 *p, int *for_us)
{
	struct endpoint_info *ep = ci->ep;
	struct conn_ends c = {};
	struct peer_info peer;
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
	if (!for_us_l2 || p->daddr != ep->ipv4)
		return -REASON_NOT_FOR_ENDPOINT;
	*for_us = 1;
	reason = check_not_managed_src(p->saddr);
	if (reason)
		return -reason;
	if (p->frag == FRAG_LATER) {
		reason = frag_resolve(p, ci);
		if (IS_ERR(reason))
			return reason;
		fd->sport = p->sport;
		fd->dport = p->dport;
	}

	resolve_peer(p->saddr, &peer);
	fd->src_id = peer.identity;
	c.src_id = peer.identity;
	c.dst_id = ep->identity;
	c.receiver = ep;
	c.owner_id = ep->identity;
	c.src_is_host = peer.is_host;
	c.via_gateway = via_gateway;
	return conn_verdict(ci, fd, p, &c, cfg);
}

static __always_inline int ipv4_to_container(struct __sk_buff *skb, struct ctx_info *ci,
					     struct flow_desc *fd, const struct bastion_config *cfg,
					     int for_us_l2, int l2_multicast, int via_gateway)
{
	struct pkt_v4 p = {};
	int for_us = 0;
	int ret;

	ret = ipv4_to_container_verdict(skb, ci, fd, cfg, for_us_l2, l2_multicast, via_gateway, &p, &for_us);
	/* A first fragment's verdict, whichever it is, is its later fragments'. */
	if (p.frag == FRAG_FIRST && for_us)
		frag_remember(&p, ci, !IS_ERR(ret));
	if (IS_ERR(ret))
		return deny(ci, fd, -ret);

	count_endpoint(ci->ifindex, ci->pkt_len, 0, 0);
	count_reason(REASON_ESTABLISHED, ci->pkt_len);
	return TC_ACT_OK;
}

SEC("tc")
int to_container(struct __sk_buff *skb)
{
	struct bastion_config *cfg = get_config();
	struct ctx_info ci = {
		.ifindex = skb->ifindex,
		.pkt_len = skb->len,
		.trace = TRACE_TO_CONTAINER,
	};
	struct flow_desc fd = {};
	__u32 ifindex = skb->ifindex;
	struct ethhdr *eth;
	void *data, *data_end;
	int for_us_l2, l2_multicast, via_gateway;
	__be16 proto;

	ci.audit = cfg && cfg->mode == MODE_AUDIT;
	ci.ep = bpf_map_lookup_elem(&bastion_ep, &ifindex);
	if (!ci.ep)
		return deny(&ci, &fd, REASON_NO_ENDPOINT);
	if (ci.ep->flags & EP_F_AUDIT)
		ci.audit = 1;
	fd.dst_id = ci.ep->identity;

	pull_headers(skb);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return deny(&ci, &fd, REASON_MALFORMED);
	proto = eth->h_proto;
	fd.ethertype = proto;
	if (skb->vlan_present || proto == ETH_P_8021Q_BE || proto == ETH_P_8021AD_BE)
		return deny(&ci, &fd, REASON_UNSUPPORTED_L3);
	for_us_l2 = mac_eq(eth->h_dest, ci.ep->mac);
	l2_multicast = mac_is_multicast(eth->h_dest);
	via_gateway = mac_eq(eth->h_source, ci.ep->gw_mac);

	if (proto == bpf_htons(ETH_P_ARP))
		return arp_to_container(skb, &ci, &fd);
	if (proto == bpf_htons(ETH_P_IP))
		return ipv4_to_container(skb, &ci, &fd, cfg, for_us_l2, l2_multicast, via_gateway);
	if (proto == bpf_htons(ETH_P_IPV6))
		return deny(&ci, &fd, REASON_IPV6);
	return deny(&ci, &fd, REASON_UNSUPPORTED_L3);
}

char _license[] SEC("license") = "Dual BSD/GPL";
