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
#include "lib/fragments.h"

static __always_inline int ipv4_to_container(struct __sk_buff *skb, struct ctx_info *ci,
					     struct flow_desc *fd, const struct bastion_config *cfg,
					     int for_us_l2, int l2_multicast)
{
	struct endpoint_info *ep = ci->ep;
	struct pkt_v4 p = {};
	struct peer_info peer;
	__u32 rule_id = 0;
	__u32 ct_flags = 0;
	int reason, ct;

	reason = parse_ipv4(skb, &p);
	fd->saddr = p.saddr;
	fd->daddr = p.daddr;
	fd->sport = p.sport;
	fd->dport = p.dport;
	fd->proto = p.proto;
	if (reason)
		return deny(ci, fd, reason);
	if (l2_multicast || p.daddr == 0xffffffff || (bpf_ntohl(p.daddr) & 0xf0000000) == 0xe0000000)
		return deny(ci, fd, REASON_BROADCAST);
	if (!for_us_l2 || p.daddr != ep->ipv4)
		return deny(ci, fd, REASON_NOT_FOR_ENDPOINT);
	reason = check_not_managed_src(p.saddr);
	if (reason)
		return deny(ci, fd, reason);
	if (p.frag == FRAG_LATER) {
		reason = frag_resolve(&p);
		if (reason)
			return deny(ci, fd, reason);
		fd->sport = p.sport;
		fd->dport = p.dport;
	}

	resolve_peer(p.saddr, &peer);
	fd->src_id = peer.identity;

	ct = ct_lookup(&p, peer.identity, ep->identity, cfg, &rule_id);
	if (ct == CT_INVALID)
		return deny(ci, fd, REASON_CT_INVALID);
	if (ct == CT_NEW) {
		__be16 dport = p.proto == IPPROTO_ICMP ? 0 : p.dport;

		if (p.proto == IPPROTO_ICMP && p.icmp_type != ICMP_ECHO)
			return deny(ci, fd, REASON_CT_INVALID);
		rule_id = policy_allows(ep->identity, peer.identity, DIR_INGRESS, p.proto, dport);
		if (!rule_id) {
			if (!ci->audit)
				return deny(ci, fd, peer.is_host ? REASON_HOST_DENIED : REASON_POLICY_DENIED);
			deny(ci, fd, peer.is_host ? REASON_HOST_DENIED : REASON_POLICY_DENIED);
			ct_flags |= CT_F_AUDIT;
		}
		ct_create(&p, peer.identity, ep->identity, rule_id, ct_flags, cfg);
		count_reason(REASON_ALLOWED_NEW, ci->pkt_len);
		if (!(ct_flags & CT_F_AUDIT) && cfg && (cfg->flags & CFG_F_TRACE_ALLOWED)) {
			fd->rule_id = rule_id;
			emit_event(ci, fd, VERDICT_ALLOWED, REASON_ALLOWED_NEW);
		}
	}
	if (p.frag == FRAG_FIRST)
		frag_remember(&p);

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
	int for_us_l2, l2_multicast;
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

	if (proto == bpf_htons(ETH_P_ARP))
		return arp_to_container(skb, &ci, &fd);
	if (proto == bpf_htons(ETH_P_IP))
		return ipv4_to_container(skb, &ci, &fd, cfg, for_us_l2, l2_multicast);
	if (proto == bpf_htons(ETH_P_IPV6))
		return deny(&ci, &fd, REASON_IPV6);
	return deny(&ci, &fd, REASON_UNSUPPORTED_L3);
}

char _license[] SEC("license") = "Dual BSD/GPL";
