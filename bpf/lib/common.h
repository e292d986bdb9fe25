/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Shared definitions: packet parsing into a small struct that every security
 * function reads, and the context each program carries (its endpoint, the
 * mode it runs in).
 */
#ifndef BASTION_COMMON_H
#define BASTION_COMMON_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/if_arp.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "maps.h"

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#define NSEC_PER_SEC		1000000000ULL
#define IP_MF			0x2000
#define IP_OFFSET		0x1FFF
#define ETH_P_8021Q_BE		bpf_htons(0x8100)
#define ETH_P_8021AD_BE		bpf_htons(0x88A8)

/* Helpers that decide return 0 (or a positive value) to go on and -REASON_*
 * to drop; one exit per program turns a drop into its event (deny()). */
#define IS_ERR(ret)		((ret) < 0)

/* Bytes the parser may need in the linear part of the skb: Ethernet, an IPv4
 * header with options, and an L4 header (or an ICMP error's inner IPv4 + 8). */
#define PARSE_PULL_LEN		(ETH_HLEN + 60 + 36)

/* ARP for Ethernet/IPv4, the only kind a container may send. */
struct arp_eth_ipv4 {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[ETH_ALEN];
	__be32 spa;
	__u8 tha[ETH_ALEN];
	__be32 tpa;
} __attribute__((packed));

/* What the parser learnt about an IPv4 packet. Ports are in network order;
 * for ICMP echo, sport carries the echo identifier and dport is 0. */
struct pkt_v4 {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags;		/* TCP: FIN 0x01 SYN 0x02 RST 0x04 ACK 0x10 */
	__u8 icmp_type;
	__u8 frag;		/* FRAG_* */
	__be16 ip_id;
	__u8 icmp_code;
	__u8 pad;
	/* for ICMP errors: the tuple of the packet the error is about */
	__be32 inner_saddr;
	__be32 inner_daddr;
	__be16 inner_sport;
	__be16 inner_dport;
	__u8 inner_proto;
	__u8 is_icmp_error;
	__u16 pad2;
};

#define FRAG_NONE	0
#define FRAG_FIRST	1	/* offset 0, more fragments follow: carries L4 */
#define FRAG_LATER	2	/* offset > 0: no L4 header */

#define TCP_FLAG_FIN	0x01
#define TCP_FLAG_SYN	0x02
#define TCP_FLAG_RST	0x04
#define TCP_FLAG_ACK	0x10

/* Everything a program knows about the packet and the endpoint it guards. */
struct ctx_info {
	struct endpoint_info *ep;	/* NULL if this interface is not provisioned */
	__u32 ifindex;
	__u32 pkt_len;
	__u8 trace;			/* TRACE_* */
	__u8 audit;			/* this endpoint runs in audit mode */
	__u16 pad;
};

static __always_inline int mac_eq(const __u8 *a, const __u8 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] &&
	       a[3] == b[3] && a[4] == b[4] && a[5] == b[5];
}

static __always_inline void mac_copy(__u8 *dst, const __u8 *src)
{
	dst[0] = src[0]; dst[1] = src[1]; dst[2] = src[2];
	dst[3] = src[3]; dst[4] = src[4]; dst[5] = src[5];
}

static __always_inline int mac_is_multicast(const __u8 *a)
{
	return a[0] & 1;	/* broadcast included */
}

/* 255.255.255.255 and 224.0.0.0/4 */
static __always_inline int is_broadcast_v4(__be32 addr)
{
	return addr == 0xffffffff || (bpf_ntohl(addr) & 0xf0000000) == 0xe0000000;
}

static __always_inline struct bastion_config *get_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&bastion_config, &zero);
}

/* How much of an L4 header the parser reads: ports and TCP flags (the TCP
 * options never), the 8 bytes of UDP/SCTP/ICMP, and for an ICMP error the
 * inner IPv4 header and 8 bytes after it. */
static __always_inline __u32 l4_parse_len(__u8 proto)
{
	switch (proto) {
	case IPPROTO_TCP:
		return sizeof(struct tcphdr);
	case IPPROTO_ICMP:
		return sizeof(struct icmphdr) + sizeof(struct iphdr) + 8;
	default:
		return 8;
	}
}

/*
 * Make sure the headers we parse sit in the linear part of the skb, and pull
 * nothing more. A TCP segment from a local socket has exactly its headers in
 * the linear part (Ethernet, IP and TCP with options, 66 bytes typically) and
 * its payload in page fragments, and it is a clone (TCP keeps the original
 * for retransmission). Pulling a fixed worst case (ETH + 60 + 36 bytes) into
 * such an skb costs a head reallocation and a copy on every packet
 * (pskb_expand_head under bpf_skb_pull_data: measured at about 15 % of the
 * program's time on bulk TCP). So pull only when the bytes the parser reads
 * are really missing, which on veth is almost never.
 */
static __always_inline void pull_headers(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 linear = data_end - data;
	__u32 need = PARSE_PULL_LEN;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + ETH_HLEN;

	if (linear >= PARSE_PULL_LEN || skb->len <= linear)
		return;
	if ((void *)(ip + 1) <= data_end) {
		if (eth->h_proto == bpf_htons(ETH_P_IP))
			need = ETH_HLEN + ip->ihl * 4 + l4_parse_len(ip->protocol);
		else if (eth->h_proto == bpf_htons(ETH_P_ARP))
			need = ETH_HLEN + sizeof(struct arp_eth_ipv4);
	}
	if (linear < need)
		bpf_skb_pull_data(skb, skb->len < need ? skb->len : need);
}

/*
 * Parse an IPv4 packet whose IP header starts at `l3` (just past Ethernet).
 * Returns 0 on success or a REASON_* to drop it for. The caller re-validates
 * nothing: every access here is bounds-checked against data_end.
 */
static __always_inline int parse_ipv4(struct __sk_buff *skb, struct pkt_v4 *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	__u32 ihl;
	__u16 frag_off;
	void *l4;

	if ((void *)(ip + 1) > data_end)
		return REASON_MALFORMED;
	if (ip->version != 4 || ip->ihl < 5)
		return REASON_MALFORMED;
	ihl = ip->ihl * 4;
	if (bpf_ntohs(ip->tot_len) < ihl)
		return REASON_MALFORMED;

	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	p->ip_id = ip->id;

	frag_off = bpf_ntohs(ip->frag_off);
	if (frag_off & IP_OFFSET) {
		/* A later fragment carries no L4 header: its ports come from the
		 * first fragment (see fragments.h). */
		p->frag = FRAG_LATER;
		return 0;
	}
	p->frag = (frag_off & IP_MF) ? FRAG_FIRST : FRAG_NONE;

	l4 = (void *)ip + ihl;
	switch (p->proto) {
	case IPPROTO_TCP: {
		struct tcphdr *th = l4;

		if ((void *)(th + 1) > data_end)
			return REASON_MALFORMED;
		p->sport = th->source;
		p->dport = th->dest;
		p->tcp_flags = ((__u8 *)th)[13];
		return 0;
	}
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		/* UDP and SCTP both start with source and destination port. */
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > data_end)
			return REASON_MALFORMED;
		p->sport = uh->source;
		p->dport = uh->dest;
		return 0;
	}
	case IPPROTO_ICMP: {
		struct icmphdr *ic = l4;

		if ((void *)(ic + 1) > data_end)
			return REASON_MALFORMED;
		p->icmp_type = ic->type;
		p->icmp_code = ic->code;
		if (ic->type == ICMP_ECHO || ic->type == ICMP_ECHOREPLY) {
			p->sport = ic->un.echo.id;
			p->dport = 0;
			return 0;
		}
		if (ic->type == ICMP_DEST_UNREACH || ic->type == ICMP_TIME_EXCEEDED ||
		    ic->type == ICMP_PARAMETERPROB) {
			/* An error about an earlier packet: keep the tuple of that
			 * packet so conntrack can tell whether it is related to a
			 * connection we allowed. Inner header without options. */
			struct iphdr *in = (void *)(ic + 1);
			struct udphdr *inl4 = (void *)(in + 1);

			if ((void *)(inl4 + 1) > data_end)
				return REASON_MALFORMED;
			if (in->ihl != 5)
				return REASON_MALFORMED;
			p->is_icmp_error = 1;
			p->inner_saddr = in->saddr;
			p->inner_daddr = in->daddr;
			p->inner_proto = in->protocol;
			if (in->protocol == IPPROTO_ICMP) {
				struct icmphdr *iic = (void *)inl4;

				p->inner_sport = iic->un.echo.id;
				p->inner_dport = 0;
			} else {
				p->inner_sport = inl4->source;
				p->inner_dport = inl4->dest;
			}
			return 0;
		}
		return REASON_UNSUPPORTED_L4;
	}
	default:
		return REASON_UNSUPPORTED_L4;
	}
}

#endif /* BASTION_COMMON_H */
