// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * from_underlay: tc ingress of the node's underlay interface. A VXLAN packet
 * from another node, addressed to this node's tunnel, is decapsulated here
 * and handed to the same checks from_overlay makes (lib/overlay.h), instead
 * of climbing the host's IPv4 and UDP receive, the VXLAN socket, the
 * device's GRO cells and a second receive on the device. Everything else on
 * the interface (the host's own traffic) goes on untouched, after a look at
 * its headers.
 *
 * Only the packets whose decapsulation here is exactly the kernel's are
 * taken; the rest is left to the device (TC_ACT_UNSPEC: on to any filter
 * after this one, then the kernel):
 *
 *   - GSO packets (large segments coalesced on the way): the kernel would
 *     clear their UDP-tunnel GSO type and skb->encapsulation, which
 *     bpf_skb_adjust_room cannot on this kernel, and a segment carrying
 *     tunnel offload flags without tunnel headers would be cut wrongly if
 *     its receiver forwarded it;
 *   - outer IPv4 with options or fragmented (the kernel reassembles), a bad
 *     header checksum (the kernel drops it), a UDP checksum to verify (ours
 *     and Linux's VXLAN send none), frames not for this host;
 *   - VXLAN flags other than "VNI valid", reserved bits set, an inner frame
 *     that is not IPv4 (from_overlay drops those with their reasons).
 *
 * A packet taken here is the frame the device would have delivered (the
 * inner Ethernet header first) with the outer source and VNI as its tunnel
 * key, so the identity check (only the node that holds an endpoint may
 * speak for it), conntrack, the receiver's policy and the drop reasons are
 * from_overlay's, event for event.
 */
#include "lib/overlay.h"

#define PACKET_HOST	0	/* linux/if_packet.h: addressed to this host */

/* A VXLAN packet's headers after the outer Ethernet header; the inner
 * frame's Ethernet header follows. */
struct vxlan_rx {
	struct iphdr ip;
	struct udphdr udp;
	__be32 vx_flags;
	__be32 vx_vni;
};				/* 36 bytes */

/* Is this a packet the device would decapsulate the same way (see the header)? */
static __always_inline int underlay_takes(const struct __sk_buff *skb, const struct tunnel_info *t, const struct vxlan_rx *h,
					  const struct ethhdr *inner)
{
	__s64 csum;

	if (h->ip.version != 4 || h->ip.ihl != 5 || h->ip.protocol != IPPROTO_UDP)
		return 0;
	if (h->ip.daddr != t->local_ipv4 || h->udp.dest != t->port || h->udp.check)
		return 0;
	if (h->ip.frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return 0;
	/* the lengths as the headers state them, no trailer to trim */
	if (bpf_ntohs(h->ip.tot_len) != skb->len - ETH_HLEN ||
	    bpf_ntohs(h->udp.len) != skb->len - ETH_HLEN - sizeof(struct iphdr))
		return 0;
	if (h->vx_flags != bpf_htonl(VXLAN_FLAG_VNI) || (h->vx_vni & bpf_htonl(0xff)))
		return 0;
	if (inner->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	/* the header checksum ip_rcv would verify: the one's complement sum of a
	 * valid header folds to 0xffff */
	csum = bpf_csum_diff(0, 0, (__be32 *)&h->ip, sizeof(h->ip), 0);
	if (csum < 0)
		return 0;
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	return csum == 0xffff;
}

SEC("tc")
int from_underlay(struct __sk_buff *skb)
{
	struct tunnel_info *t = get_tunnel();
	struct bastion_config *cfg;
	struct ctx_info ci = {
		.ifindex = skb->ifindex,
		.trace = TRACE_FROM_OVERLAY,
	};
	struct bpf_tunnel_key key = {};
	struct flow_desc fd = {};
	struct ethhdr inner;
	struct vxlan_rx h;

	/* the host's own traffic, and whatever the device must see */
	if (!t || !t->ifindex || !t->port || skb->ifindex != t->underlay_ifindex)
		return TC_ACT_UNSPEC;
	if (skb->protocol != bpf_htons(ETH_P_IP) || skb->pkt_type != PACKET_HOST || skb->gso_size)
		return TC_ACT_UNSPEC;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &h, sizeof(h)) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(h), &inner, sizeof(inner)))
		return TC_ACT_UNSPEC;
	if (!underlay_takes(skb, t, &h, &inner))
		return TC_ACT_UNSPEC;

	key.tunnel_id = bpf_ntohl(h.vx_vni) >> 8;
	key.remote_ipv4 = bpf_ntohl(h.ip.saddr);
	/* Off with the outer IPv4, UDP and VXLAN headers and the outer Ethernet
	 * header's contents: what stays is a 14-byte header (the outer one's
	 * place) and the inner IPv4 packet; the inner Ethernet header goes in
	 * that place. A failed shrink leaves the packet as it was, for the
	 * device. */
	if (bpf_skb_adjust_room(skb, -VXLAN_OVERHEAD, BPF_ADJ_ROOM_MAC, 0))
		return TC_ACT_UNSPEC;
	cfg = get_config();
	ci.audit = cfg && cfg->mode == MODE_AUDIT;
	ci.pkt_len = skb->len;	/* the decapsulated frame's, as from_overlay counts it */
	fd.src_id = key.tunnel_id;
	fd.tunnel_saddr = h.ip.saddr;
	if (bpf_skb_store_bytes(skb, 0, &inner, sizeof(inner), 0))
		return deny(&ci, &fd, REASON_MALFORMED);
	return overlay_deliver(skb, &ci, &fd, cfg, &key);
}

char _license[] SEC("license") = "Dual BSD/GPL";
