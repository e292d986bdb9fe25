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
#include "lib/verdict.h"
#include "lib/fragments.h"
#include "lib/forward.h"
#include "lib/encap.h"

/* Everything up to the verdict; fills *p and *peer for the caller. */
static __always_inline int ipv4_from_container_verdict(struct __sk_buff *skb, const struct ctx_info *ci,
						       struct flow_desc *fd, const struct bastion_config *cfg,
						       int l2_multicast, struct pkt_v4 *p, struct peer_info *peer,
						       int *src_ok)
{
	struct endpoint_info *ep = ci->ep;
	struct conn_ends c = {};
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
	reason = check_src_ipv4(ep, p->saddr);
	if (reason)
		return -reason;
	*src_ok = 1;
	if (l2_multicast || is_broadcast_v4(p->daddr))
		return -REASON_BROADCAST;
	if (p->frag == FRAG_LATER) {
		reason = frag_resolve(p, ci);
		if (IS_ERR(reason))
			return reason;
		fd->sport = p->sport;
		fd->dport = p->dport;
	}

	resolve_peer(p->daddr, peer);
	fd->dst_id = peer->identity;
	c.src_id = ep->identity;
	c.dst_id = peer->identity;
	c.sender = ep;
	c.receiver = peer->ep;
	c.owner_id = ep->identity;
	c.dst_is_host = peer->is_host;
	return conn_verdict(ci, fd, p, &c, cfg);
}

static __always_inline int ipv4_from_container(struct __sk_buff *skb, struct ctx_info *ci,
					       struct flow_desc *fd, const struct bastion_config *cfg,
					       int l2_multicast)
{
	struct pkt_v4 p = {};
	struct peer_info peer = {};
	int src_ok = 0;
	int ret;

	ret = ipv4_from_container_verdict(skb, ci, fd, cfg, l2_multicast, &p, &peer, &src_ok);
	/* A first fragment's verdict, whichever it is, is its later fragments'
	 * (a forged source never gets that far: it would write others' keys). */
	if (p.frag == FRAG_FIRST && src_ok)
		frag_remember(&p, ci, !IS_ERR(ret));
	if (IS_ERR(ret))
		return deny(ci, fd, -ret);

	if (peer.remote) {
		int ret = tunnel_redirect(skb, peer.remote, ci->ep->identity);

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
