/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Source verification: a packet leaving container C must carry C's MAC and
 * C's IP and arrive on C's own interface. The interface part is implicit on
 * the way out (the endpoint is looked up by the ifindex the packet arrived
 * on); on the way in, an address that belongs to a managed container but
 * arrives from the bridge was forged by someone else.
 */
#ifndef BASTION_SRCCHECK_H
#define BASTION_SRCCHECK_H

#include "common.h"

/* Returns 0 if the frame's source MAC is the endpoint's, else a reason. */
static __always_inline int check_src_mac(const struct endpoint_info *ep, const struct ethhdr *eth)
{
	return mac_eq(eth->h_source, ep->mac) ? 0 : REASON_SPOOFED_MAC;
}

/* Returns 0 if the IPv4 source is the endpoint's own address. */
static __always_inline int check_src_ipv4(const struct endpoint_info *ep, __be32 saddr)
{
	return saddr == ep->ipv4 ? 0 : REASON_SPOOFED_IP;
}

/* ARP sender fields must be the container's own MAC and IP. */
static __always_inline int check_src_arp(const struct endpoint_info *ep, const struct arp_eth_ipv4 *arp)
{
	if (!mac_eq(arp->sha, ep->mac) || arp->spa != ep->ipv4)
		return REASON_SPOOFED_ARP;
	return 0;
}

/* On the way in: a managed container's address never arrives through the
 * bridge (managed-to-managed traffic is handed veth to veth, or through the
 * tunnel for another node's), so one that does was forged elsewhere. */
static __always_inline int check_not_managed_src(__be32 saddr)
{
	if (bpf_map_lookup_elem(&bastion_ep_ip, &saddr) || bpf_map_lookup_elem(&bastion_remote, &saddr))
		return REASON_SPOOFED_IFINDEX;
	return 0;
}

#endif /* BASTION_SRCCHECK_H */
