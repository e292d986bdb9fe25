/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * End-to-end direct forwarding. Traffic between two local containers is
 * handed from the sender's veth straight into the receiver's network
 * namespace (bpf_redirect_peer): it never crosses the bridge, so no third
 * container can be flooded a copy, and it skips the bridge, netfilter and a
 * softirq round trip, which is where the speed comes from.
 *
 * The receiver's own tc hook does not run on this path, which is why the
 * sender's program checks the receiver's ingress policy too.
 */
#ifndef BASTION_FORWARD_H
#define BASTION_FORWARD_H

#include "common.h"

/*
 * The MAC rewrite goes through bpf_skb_store_bytes rather than packet
 * pointers, so the program never writes packet data directly: that would make
 * the verifier add a prologue that un-clones (reallocates the head of) every
 * cloned skb, i.e. every TCP segment, on every packet (see arp_respond).
 */
static __always_inline int redirect_to_endpoint(struct __sk_buff *skb, const struct endpoint_info *dst)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return TC_ACT_SHOT;
	if (!mac_eq(eth->h_dest, dst->mac)) {
		/* Sent to the gateway (the peer is on another bridge, reached by
		 * routing): deliver it the way the gateway would have. */
		__u8 macs[2 * ETH_ALEN];

		mac_copy(macs, dst->mac);
		mac_copy(macs + ETH_ALEN, dst->gw_mac);
		if (bpf_skb_store_bytes(skb, 0, macs, sizeof(macs), 0))
			return TC_ACT_SHOT;
	}
	return bpf_redirect_peer(dst->ifindex, 0);
}

#endif /* BASTION_FORWARD_H */
