/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Between nodes: VXLAN with the sender's identity in the tunnel key.
 *
 * The node has one VXLAN device in external (collect_md) mode. A packet for
 * an endpoint on another node is encapsulated here (VNI = the sending
 * endpoint's identity, outer destination = the receiving endpoint's node)
 * and sent on the underlay interface (tunnel_encap_direct), or, when the
 * node gave no underlay interface, gets its tunnel metadata and is
 * redirected to that device, which encapsulates it. Either way: no bridge,
 * no iptables on the way, and the same packet on the wire. Packets from
 * other nodes always arrive through the device (from_overlay). Identities of
 * cluster endpoints fit in the VNI's 24 bits (the control plane allocates
 * them so).
 *
 * On the receiving node the identity is a claim, and a claim is believed
 * only from the node that holds it: the inner source address must be a
 * remote endpoint this node knows, with exactly the claimed identity, on the
 * node whose underlay address is the outer source. A host on the underlay
 * can therefore not speak for another host's containers, and a container
 * cannot speak for anybody through a VXLAN packet of its own making (its
 * packets to other nodes' underlay addresses are not allowed in the first
 * place: those addresses are ID_REMOTE_NODE, never world).
 *
 * What VXLAN cannot give: the outer source address is not authenticated.
 * An underlay that lets a host forge another host's address must be fixed
 * on the underlay (source address validation); see docs/cluster.md.
 */
#ifndef BASTION_ENCAP_H
#define BASTION_ENCAP_H

#include "common.h"
#include "events.h"

#define TUNNEL_TTL	64
#define TUNNEL_VNI_MASK	0xffffff

static __always_inline struct tunnel_info *get_tunnel(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&bastion_tunnel, &zero);
}

/* What goes between the sender's Ethernet header and its IPv4 header. */
struct vxlan_outer {
	struct iphdr ip;
	struct udphdr udp;
	__be32 vx_flags;	/* VXLAN_FLAG_VNI: the VNI is valid */
	__be32 vx_vni;		/* VNI << 8 */
	struct ethhdr inner;	/* the sender's frame's own header */
};				/* 50 bytes (VXLAN's overhead), padded to 52 */

#define VXLAN_FLAG_VNI		0x08000000
#define VXLAN_OVERHEAD		50
#define VXLAN_SPORT_MIN		49152	/* source ports from the dynamic range (RFC 7348) */

/*
 * The VXLAN packet built here, handed to the underlay interface: what the
 * VXLAN device would build (same headers, same VNI, UDP checksum zero, a
 * source port from the inner flow's hash, the inner ECN codepoint outside), without the device's transmit
 * path (its own route lookup and tunnel metadata per packet). A TCP segment
 * stays one GSO packet: the kernel is told it is UDP-tunnelled with an
 * inner Ethernet header, and the inner MSS is kept (the containers' MTU
 * leaves room for the headers). bpf_redirect_neigh finds the next hop on
 * the underlay (a route lookup) and its MAC.
 */
static __always_inline int tunnel_encap_direct(struct __sk_buff *skb, const struct tunnel_info *t,
					       const struct remote_endpoint *dst, __u32 vni)
{
	const __u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 |
			    BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2_ETH |
			    BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN);
	struct vxlan_outer h = {};
	__u32 len = skb->len;
	__u32 hash = bpf_get_hash_recalc(skb);
	__u8 tos = 0;
	__s64 csum;

	if (bpf_skb_load_bytes(skb, 0, &h.inner, sizeof(h.inner)))
		return TC_ACT_SHOT;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + 1, &tos, 1))
		return TC_ACT_SHOT;
	h.ip.version = 4;
	h.ip.ihl = 5;
	/* ECN as the device does it (INET_ECN_encapsulate): the inner packet's
	 * ECN-capable codepoint outside, so the underlay can mark instead of
	 * dropping; a CE inside is ECT(0) outside. */
	tos &= 0x03;
	h.ip.tos = tos == 0x03 ? 0x02 : tos;
	h.ip.tot_len = bpf_htons(len - ETH_HLEN + VXLAN_OVERHEAD);
	h.ip.id = (__be16)hash;
	h.ip.ttl = TUNNEL_TTL;
	h.ip.protocol = IPPROTO_UDP;
	h.ip.saddr = t->local_ipv4;
	h.ip.daddr = dst->node_ipv4;
	csum = bpf_csum_diff(0, 0, (__be32 *)&h.ip, sizeof(h.ip), 0);
	if (csum < 0)
		return TC_ACT_SHOT;
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	h.ip.check = (__sum16)~csum;
	h.udp.source = bpf_htons(VXLAN_SPORT_MIN | (hash >> 16));
	h.udp.dest = t->port;
	h.udp.len = bpf_htons(len - ETH_HLEN + VXLAN_OVERHEAD - sizeof(struct iphdr));
	h.vx_flags = bpf_htonl(VXLAN_FLAG_VNI);
	h.vx_vni = bpf_htonl(vni << 8);

	if (bpf_skb_adjust_room(skb, VXLAN_OVERHEAD, BPF_ADJ_ROOM_MAC, flags))
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &h, VXLAN_OVERHEAD, 0))
		return TC_ACT_SHOT;
	return bpf_redirect_neigh(t->underlay_ifindex, NULL, 0, 0);
}

/*
 * Will the VXLAN packet fit the underlay's MTU? A single packet: its length
 * plus the 50 bytes. A GSO packet: each segment it will be cut into, i.e.
 * its inner IPv4 and TCP/UDP headers, gso_size bytes of payload and the 50
 * bytes. One that does not fit goes through the VXLAN device instead, which
 * sends the sender the "fragmentation needed" a TCP connection lowers its
 * MSS on (or fragments the outer packet), where the underlay interface
 * would simply drop a frame larger than its MTU.
 */
static __always_inline int tunnel_fits(struct __sk_buff *skb, const struct tunnel_info *t)
{
	__u32 mtu_len = 0;
	__u8 b[2];
	__u32 hdrs;

	if (!skb->gso_size)
		return bpf_check_mtu(skb, t->underlay_ifindex, &mtu_len, VXLAN_OVERHEAD, 0) == 0;
	/* ihl, then the L4 header's length (TCP data offset; UDP: 8) */
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &b[0], 1))
		return 0;
	hdrs = (b[0] & 0x0f) * 4;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + 9, &b[1], 1))
		return 0;
	if (b[1] == IPPROTO_TCP) {
		if (bpf_skb_load_bytes(skb, ETH_HLEN + (hdrs & 0x3c) + 12, &b[0], 1))
			return 0;
		hdrs += (b[0] >> 4) * 4;
	} else {
		hdrs += sizeof(struct udphdr);
	}
	mtu_len = (hdrs & 0xff) + skb->gso_size + VXLAN_OVERHEAD;
	return bpf_check_mtu(skb, t->underlay_ifindex, &mtu_len, 0, 0) == 0;
}

/*
 * Hand a packet to another node's endpoint: VXLAN with the sender's
 * identity as the VNI, built here and sent on the underlay (above), or
 * through the VXLAN device (tunnel key, then the device) when the node has
 * not said which underlay interface to use or the packet would not fit it. Returns the tc verdict, or
 * -REASON_NO_TUNNEL when this node has no tunnel (the caller drops with
 * that reason). The UDP checksum stays zero, as on Docker's and flannel's
 * VXLAN (the inner packet carries its own).
 */
static __always_inline int tunnel_redirect(struct __sk_buff *skb, const struct remote_endpoint *dst, __u32 src_identity)
{
	struct tunnel_info *t = get_tunnel();
	struct bpf_tunnel_key key = {};

	if (!t || !t->ifindex)
		return -REASON_NO_TUNNEL;
	if (t->underlay_ifindex && t->port && tunnel_fits(skb, t))
		return tunnel_encap_direct(skb, t, dst, src_identity & TUNNEL_VNI_MASK);
	key.tunnel_id = src_identity & TUNNEL_VNI_MASK;
	key.remote_ipv4 = bpf_ntohl(dst->node_ipv4);
	key.tunnel_ttl = TUNNEL_TTL;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX))
		return TC_ACT_SHOT;
	return bpf_redirect(t->ifindex, 0);
}

/*
 * Who sent this packet through the tunnel: the remote endpoint of its inner
 * source address, if that endpoint has the claimed identity (the VNI) and
 * lives on the node the packet comes from (the outer source). Returns 0 and
 * sets *src, or a REASON_* to drop it for.
 */
static __always_inline int tunnel_source(__be32 inner_saddr, const struct bpf_tunnel_key *key,
					 struct remote_endpoint **src)
{
	struct remote_endpoint *r = bpf_map_lookup_elem(&bastion_remote, &inner_saddr);

	if (!r)
		return REASON_TUNNEL_UNKNOWN_SOURCE;
	if (r->identity != key->tunnel_id || r->node_ipv4 != bpf_htonl(key->remote_ipv4))
		return REASON_TUNNEL_SPOOFED;
	*src = r;
	return 0;
}

#endif /* BASTION_ENCAP_H */
