// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * from_overlay: tc ingress of the node's VXLAN device, i.e. every packet
 * another node sends to this node's containers that from_underlay left to
 * the kernel (segments of large sends, and everything when the node has no
 * underlay program), decapsulated by the device; the tunnel key it carries
 * says which node sent it and with which claimed identity. What happens
 * next is lib/overlay.h's, shared with from_underlay.
 */
#include "lib/overlay.h"

SEC("tc")
int from_overlay(struct __sk_buff *skb)
{
	struct bastion_config *cfg = get_config();
	struct ctx_info ci = {
		.ifindex = skb->ifindex,
		.pkt_len = skb->len,
		.trace = TRACE_FROM_OVERLAY,
	};
	struct bpf_tunnel_key key = {};
	struct flow_desc fd = {};

	ci.audit = cfg && cfg->mode == MODE_AUDIT;
	/* No tunnel metadata: not from the VXLAN receive path at all. */
	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0))
		return deny(&ci, &fd, REASON_MALFORMED);
	fd.src_id = key.tunnel_id;
	/* Every event of this program says which host the packet came from, so
	 * a drop before the receiver is known still names the sender. */
	fd.tunnel_saddr = bpf_htonl(key.remote_ipv4);
	return overlay_deliver(skb, &ci, &fd, cfg, &key);
}

char _license[] SEC("license") = "Dual BSD/GPL";
