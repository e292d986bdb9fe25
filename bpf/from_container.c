// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * from_container: tc ingress of a container's host-side veth, i.e. every
 * packet the container sends. All five security functions run here:
 *
 *   source verification  the frame must carry the container's MAC and IP
 *   direct ARP handler   requests are answered here or dropped, never flooded
 *   isolation            new connections need the sender's egress policy and,
 *                        for a local receiver, the receiver's ingress policy
 *   host isolation       the host is a peer like any other (ID_HOST)
 *   direct forwarding    local receivers get the packet veth to veth;
 *                        another node's endpoints get it through the tunnel
 *                        (lib/encap.h), their node checks their ingress
 *
 * Per-packet work is a fixed number of map lookups, whatever the number of
 * containers: endpoint by ifindex, peer by IP (hash, then LPM), conntrack;
 * the policy trie only on a connection's first packet.
 */
#include "lib/common.h"
#include "lib/events.h"
#include "lib/srccheck.h"
#include "lib/arp.h"
#include "lib/policy.h"
#include "lib/conntrack.h"
#include "lib/fragments.h"
#include "lib/forward.h"
#include "lib/encap.h"

static __always_inline int is_broadcast_v4(__be32 addr)
{
	/* 255.255.255.255 and 224.0.0.0/4 */
	return addr == 0xffffffff || (bpf_ntohl(addr) & 0xf0000000) == 0xe0000000;
}

static __always_inline int ipv4_from_container(struct __sk_buff *skb, struct ctx_info *ci,
					       struct flow_desc *fd, const struct bastion_config *cfg,
					       int l2_multicast)
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
	reason = check_src_ipv4(ep, p.saddr);
	if (reason)
		return deny(ci, fd, reason);
	if (l2_multicast || is_broadcast_v4(p.daddr))
		return deny(ci, fd, REASON_BROADCAST);
	if (p.frag == FRAG_LATER) {
		reason = frag_resolve(&p);
		if (reason)
			return deny(ci, fd, reason);
		fd->sport = p.sport;
		fd->dport = p.dport;
	}

	resolve_peer(p.daddr, &peer);
	fd->dst_id = peer.identity;

	ct = ct_lookup(&p, ep->identity, peer.identity, cfg, &rule_id);
	if (ct == CT_INVALID)
		return deny(ci, fd, REASON_CT_INVALID);
	if (ct == CT_NEW) {
		__be16 dport = p.proto == IPPROTO_ICMP ? 0 : p.dport;

		/* Only an echo request opens an ICMP "connection". */
		if (p.proto == IPPROTO_ICMP && p.icmp_type != ICMP_ECHO)
			return deny(ci, fd, REASON_CT_INVALID);

		/* The sender's egress. */
		rule_id = policy_allows(ep->identity, peer.identity, DIR_EGRESS, p.proto, dport);
		if (!rule_id) {
			if (!ci->audit)
				return deny(ci, fd, peer.is_host ? REASON_HOST_DENIED : REASON_POLICY_DENIED);
			deny(ci, fd, peer.is_host ? REASON_HOST_DENIED : REASON_POLICY_DENIED);
			ct_flags |= CT_F_AUDIT;
		}
		/* A local receiver's ingress: its own hook will not see this
		 * packet (direct forwarding), so it is checked here. */
		if (peer.ep) {
			struct ctx_info dci = *ci;
			__u32 irule;

			dci.audit = ci->audit || (cfg && cfg->mode == MODE_AUDIT) ||
				    (peer.ep->flags & EP_F_AUDIT);
			irule = policy_allows(peer.ep->identity, ep->identity, DIR_INGRESS, p.proto, dport);
			if (!irule) {
				if (!dci.audit)
					return deny(&dci, fd, REASON_POLICY_DENIED);
				deny(&dci, fd, REASON_POLICY_DENIED);
				ct_flags |= CT_F_AUDIT;
			}
			if (!rule_id)
				rule_id = irule;
		}
		ct_create(&p, ep->identity, peer.identity, rule_id, ct_flags, cfg);
		count_reason(REASON_ALLOWED_NEW, ci->pkt_len);
		if (!(ct_flags & CT_F_AUDIT) && cfg && (cfg->flags & CFG_F_TRACE_ALLOWED)) {
			fd->rule_id = rule_id;
			emit_event(ci, fd, VERDICT_ALLOWED, REASON_ALLOWED_NEW);
		}
	}
	if (p.frag == FRAG_FIRST)
		frag_remember(&p);

	if (peer.remote) {
		int ret = tunnel_redirect(skb, peer.remote, ep->identity);

		if (ret < 0)
			return deny(ci, fd, -ret);
		count_endpoint(ci->ifindex, ci->pkt_len, 1, 0);
		count_reason(REASON_ENCAPSULATED, ci->pkt_len);
		return ret;
	}
	count_endpoint(ci->ifindex, ci->pkt_len, 1, 0);
	if (peer.ep) {
		/* The receiver's own hook is bypassed: count what it was handed here. */
		count_endpoint(peer.ep->ifindex, ci->pkt_len, 0, 0);
		count_reason(REASON_REDIRECTED, ci->pkt_len);
		return redirect_to_endpoint(skb, peer.ep);
	}
	count_reason(REASON_ESTABLISHED, ci->pkt_len);
	return TC_ACT_OK;
}

SEC("tc")
int from_container(struct __sk_buff *skb)
{
	struct bastion_config *cfg = get_config();
	struct ctx_info ci = {
		.ifindex = skb->ifindex,
		.pkt_len = skb->len,
		.trace = TRACE_FROM_CONTAINER,
	};
	struct flow_desc fd = {};
	__u32 ifindex = skb->ifindex;
	struct ethhdr *eth;
	void *data, *data_end;
	int l2_multicast;
	__be16 proto;

	ci.audit = cfg && cfg->mode == MODE_AUDIT;
	ci.ep = bpf_map_lookup_elem(&bastion_ep, &ifindex);
	/* A stack attached before its endpoint is provisioned drops
	 * everything: a new container is never unprotected, not even for its
	 * first packet. */
	if (!ci.ep)
		return deny(&ci, &fd, REASON_NO_ENDPOINT);
	if (ci.ep->flags & EP_F_AUDIT)
		ci.audit = 1;
	fd.src_id = ci.ep->identity;

	pull_headers(skb);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return deny(&ci, &fd, REASON_MALFORMED);
	proto = eth->h_proto;
	fd.ethertype = proto;
	if (check_src_mac(ci.ep, eth))
		return deny(&ci, &fd, REASON_SPOOFED_MAC);
	/* VLAN tags, in the frame or offloaded into skb metadata, would let a
	 * container talk on a segment the stack knows nothing about. */
	if (skb->vlan_present || proto == ETH_P_8021Q_BE || proto == ETH_P_8021AD_BE)
		return deny(&ci, &fd, REASON_UNSUPPORTED_L3);
	l2_multicast = mac_is_multicast(eth->h_dest);

	if (proto == bpf_htons(ETH_P_ARP))
		return arp_from_container(skb, &ci, &fd);
	if (proto == bpf_htons(ETH_P_IP))
		return ipv4_from_container(skb, &ci, &fd, cfg, l2_multicast);
	if (proto == bpf_htons(ETH_P_IPV6))
		return deny(&ci, &fd, REASON_IPV6);
	return deny(&ci, &fd, REASON_UNSUPPORTED_L3);
}

char _license[] SEC("license") = "Dual BSD/GPL";
