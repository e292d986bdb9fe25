/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Direct ARP handler. A container's ARP request never reaches the bridge:
 * the stack answers it with the true MAC when the requester may talk to the
 * target (a dependency in either direction, see bastion_neigh), and drops it
 * otherwise, so an ARP scan reveals exactly the requester's dependencies.
 * Gratuitous ARP, unsolicited replies and anything with a forged sender are
 * dropped, so ARP poisoning has nothing to work with.
 *
 * The host may still resolve a container (it needs the MAC to answer the
 * container's allowed connections), and a container may answer the host.
 */
#ifndef BASTION_ARP_H
#define BASTION_ARP_H

#include "common.h"
#include "events.h"
#include "policy.h"
#include "srccheck.h"

static __always_inline int arp_valid(const struct arp_eth_ipv4 *arp)
{
	return arp->htype == bpf_htons(ARPHRD_ETHER) && arp->ptype == bpf_htons(ETH_P_IP) &&
	       arp->hlen == ETH_ALEN && arp->plen == 4;
}

static __always_inline void arp_fill_desc(struct flow_desc *fd, const struct arp_eth_ipv4 *arp)
{
	fd->saddr = arp->spa;
	fd->daddr = arp->tpa;
	fd->proto = 0;
}

/* The reply as it goes on the wire: Ethernet header and ARP payload. */
struct arp_frame {
	struct ethhdr eth;
	struct arp_eth_ipv4 arp;
} __attribute__((packed));

/*
 * Turn the request into the reply `mac` would have sent for tpa, and hand it
 * straight back into the requester's namespace.
 *
 * The reply is built on the stack and written with bpf_skb_store_bytes, not
 * through packet pointers: a program that writes packet data directly gets a
 * prologue from the verifier that un-clones every cloned skb it sees
 * (bpf_skb_pull_data(skb, 0) when skb->cloned), and every TCP segment a
 * local socket sends is a clone. That prologue reallocated the head of every
 * TCP packet the container sent, for the sake of the rare ARP reply.
 */
static __always_inline int arp_respond(struct __sk_buff *skb, const __u8 *mac)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct arp_eth_ipv4 *arp = (void *)(eth + 1);
	struct arp_frame r;

	if ((void *)(arp + 1) > data_end)
		return TC_ACT_SHOT;
	mac_copy(r.eth.h_dest, arp->sha);
	mac_copy(r.eth.h_source, mac);
	r.eth.h_proto = bpf_htons(ETH_P_ARP);
	r.arp.htype = arp->htype;
	r.arp.ptype = arp->ptype;
	r.arp.hlen = arp->hlen;
	r.arp.plen = arp->plen;
	r.arp.op = bpf_htons(ARPOP_REPLY);
	mac_copy(r.arp.sha, mac);
	r.arp.spa = arp->tpa;
	mac_copy(r.arp.tha, arp->sha);
	r.arp.tpa = arp->spa;
	if (bpf_skb_store_bytes(skb, 0, &r, sizeof(r), 0))
		return TC_ACT_SHOT;
	/* The peer of the veth this request came in on is the requester. */
	return bpf_redirect_peer(skb->ifindex, 0);
}

static __always_inline int arp_from_container(struct __sk_buff *skb, struct ctx_info *ci, struct flow_desc *fd)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct arp_eth_ipv4 *arp = data + ETH_HLEN;
	struct endpoint_info *ep = ci->ep;
	struct peer_info peer;
	int reason;

	if ((void *)(arp + 1) > data_end)
		return deny(ci, fd, REASON_MALFORMED);
	arp_fill_desc(fd, arp);
	if (!arp_valid(arp))
		return deny(ci, fd, REASON_UNSUPPORTED_L3);
	reason = check_src_arp(ep, arp);
	if (reason)
		return deny(ci, fd, reason);

	resolve_peer(arp->tpa, &peer);
	fd->dst_id = peer.identity;

	if (arp->op == bpf_htons(ARPOP_REQUEST)) {
		if (arp->tpa == arp->spa)
			return deny(ci, fd, REASON_ARP_UNSOLICITED);	/* gratuitous */
		if (peer.ep || peer.remote) {
			/* A dependency on this node or on another: answered the same
			 * way, with its own MAC (another node's endpoint is reached
			 * through the tunnel, never by ARP on the wire). */
			if (!neigh_allowed(ep->identity, peer.identity))
				return deny(ci, fd, REASON_ARP_DENIED);
			count_reason(REASON_ARP_REPLIED, ci->pkt_len);
			emit_event(ci, fd, VERDICT_ARP_REPLY, REASON_ARP_REPLIED);
			return arp_respond(skb, peer.ep ? peer.ep->mac : peer.remote->mac);
		}
		if (peer.is_host) {
			if (!neigh_allowed(ep->identity, ID_HOST))
				return deny(ci, fd, REASON_ARP_DENIED);
			count_reason(REASON_ARP_REPLIED, ci->pkt_len);
			emit_event(ci, fd, VERDICT_ARP_REPLY, REASON_ARP_REPLIED);
			return arp_respond(skb, ep->gw_mac);
		}
		/* Something unmanaged on the subnet: only if policy names it (a
		 * CIDR rule), and then the request goes out to find it. */
		if (!neigh_allowed(ep->identity, peer.identity))
			return deny(ci, fd, REASON_ARP_DENIED);
		count_reason(REASON_ARP_HOST, ci->pkt_len);
		return TC_ACT_OK;
	}

	if (arp->op == bpf_htons(ARPOP_REPLY)) {
		/* Answering the host (or an unmanaged peer policy names), which
		 * asked for this container's MAC. The sender is already verified. */
		if (arp->tpa == arp->spa)
			return deny(ci, fd, REASON_ARP_UNSOLICITED);
		if (peer.ep || peer.remote)
			return deny(ci, fd, REASON_ARP_UNSOLICITED);
		if (peer.is_host || neigh_allowed(ep->identity, peer.identity)) {
			count_reason(REASON_ARP_HOST, ci->pkt_len);
			return TC_ACT_OK;
		}
		return deny(ci, fd, REASON_ARP_UNSOLICITED);
	}
	return deny(ci, fd, REASON_ARP_UNSOLICITED);
}

static __always_inline int arp_to_container(struct __sk_buff *skb, struct ctx_info *ci, struct flow_desc *fd)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct arp_eth_ipv4 *arp = data + ETH_HLEN;
	struct endpoint_info *ep = ci->ep;
	struct peer_info peer;

	if ((void *)(arp + 1) > data_end)
		return deny(ci, fd, REASON_MALFORMED);
	arp_fill_desc(fd, arp);
	if (!arp_valid(arp))
		return deny(ci, fd, REASON_UNSUPPORTED_L3);
	/* The host ARPs for every address it wants; the bridge floods the
	 * request to every port. Only the target's copy goes in. */
	if (arp->tpa != ep->ipv4)
		return deny(ci, fd, REASON_NOT_FOR_ENDPOINT);
	if (check_not_managed_src(arp->spa))
		return deny(ci, fd, REASON_SPOOFED_IFINDEX);

	resolve_peer(arp->spa, &peer);
	fd->src_id = peer.identity;
	if (!peer.is_host && !neigh_allowed(ep->identity, peer.identity)) {
		return deny(ci, fd, arp->op == bpf_htons(ARPOP_REQUEST) ? REASON_ARP_DENIED
									: REASON_ARP_UNSOLICITED);
	}
	if (arp->op == bpf_htons(ARPOP_REQUEST)) {
		if (arp->spa == arp->tpa)
			return deny(ci, fd, REASON_ARP_UNSOLICITED);
		count_reason(REASON_ARP_HOST, ci->pkt_len);
		return TC_ACT_OK;
	}
	if (arp->op == bpf_htons(ARPOP_REPLY) && mac_eq(arp->tha, ep->mac)) {
		count_reason(REASON_ARP_HOST, ci->pkt_len);
		return TC_ACT_OK;
	}
	return deny(ci, fd, REASON_ARP_UNSOLICITED);
}

#endif /* BASTION_ARP_H */
