/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The verdict on an IPv4 packet between a local endpoint and a peer, shared
 * by both programs: conntrack first (established, reply, related), then, for
 * a new connection, the policy of every local end (the sender's egress, the
 * receiver's ingress), then a conntrack entry and the ALLOWED event.
 *
 * Helpers return a CT_* class (>= 0) to let the packet go on, or -REASON_*
 * to drop it; each program has one exit that turns a drop into its event
 * (deny(), in the style of Cilium's IS_ERR(ret) -> send_drop_notify). Audit
 * mode is decided in one place, policy_verdict: a denial that audit mode
 * lets through is recorded there (AUDIT event) and the connection opens
 * with CT_F_AUDIT.
 */
#ifndef BASTION_VERDICT_H
#define BASTION_VERDICT_H

#include "common.h"
#include "events.h"
#include "policy.h"
#include "conntrack.h"

/* The two ends of a packet as the deciding program sees them. */
struct conn_ends {
	__u32 src_id;
	__u32 dst_id;
	struct endpoint_info *sender;	/* the sender when it is a local endpoint, else NULL */
	struct endpoint_info *receiver;	/* the receiver when it is a local endpoint, else NULL */
	__u32 owner_id;			/* whose hook decides: charged for the conntrack entry */
	__u8 src_is_host;
	__u8 dst_is_host;
	__u8 via_gateway;		/* the frame came from the gateway's MAC (to_container) */
	__u8 pad;
};

/*
 * One endpoint's policy on a new connection: `ep` towards `peer_id` in
 * `dir`. 0 when allowed (the first allowing rule goes to *rule_id) or when
 * only audit mode lets it through (recorded, CT_F_AUDIT), else -reason.
 */
static __always_inline int policy_verdict(const struct ctx_info *ci, const struct flow_desc *fd,
					  const struct endpoint_info *ep, __u32 peer_id, __u8 dir,
					  const struct pkt_v4 *p, __u8 reason, __u32 *rule_id, __u32 *ct_flags)
{
	__be16 dport = p->proto == IPPROTO_ICMP ? 0 : p->dport;
	__u32 rule = policy_allows(ep->identity, peer_id, dir, p->proto, dport);

	if (rule) {
		if (!*rule_id)
			*rule_id = rule;
		return 0;
	}
	/* The global mode and the deciding endpoint's own flag are in
	 * ci->audit; the other local end may be in audit mode by itself. */
	if (!ci->audit && !(ep->flags & EP_F_AUDIT))
		return -reason;
	count_reason(REASON_AUDITED, ci->pkt_len);
	emit_event(ci, fd, VERDICT_AUDIT, reason);
	*ct_flags |= CT_F_AUDIT;
	return 0;
}

/*
 * The verdict on one IPv4 packet: a CT_* class when it may go on, or
 * -REASON_* (policy-denied, host-denied, ct-invalid, icmp-unrelated,
 * ct-limit, ct-full).
 */
static __always_inline int conn_verdict(const struct ctx_info *ci, struct flow_desc *fd,
					const struct pkt_v4 *p, const struct conn_ends *c,
					const struct bastion_config *cfg)
{
	__u32 rule_id = 0, ct_flags = 0;
	int ct, ret;

	ct = ct_lookup(p, c->src_id, c->dst_id, cfg, c->via_gateway, &rule_id);
	if (ct != CT_NEW)
		return ct;
	/* Only an echo request opens an ICMP "connection". */
	if (p->proto == IPPROTO_ICMP && p->icmp_type != ICMP_ECHO)
		return -REASON_CT_INVALID;
	if (c->sender) {
		ret = policy_verdict(ci, fd, c->sender, c->dst_id, DIR_EGRESS, p,
				     c->dst_is_host ? REASON_HOST_DENIED : REASON_POLICY_DENIED, &rule_id, &ct_flags);
		if (IS_ERR(ret))
			return ret;
	}
	/* A local receiver's ingress. In from_container its own hook will not
	 * see this packet (direct forwarding), so it is checked here. */
	if (c->receiver) {
		ret = policy_verdict(ci, fd, c->receiver, c->src_id, DIR_INGRESS, p,
				     c->src_is_host ? REASON_HOST_DENIED : REASON_POLICY_DENIED, &rule_id, &ct_flags);
		if (IS_ERR(ret))
			return ret;
	}
	ret = ct_create(p, c->src_id, c->dst_id, rule_id, ct_flags, c->owner_id, cfg);
	if (IS_ERR(ret))
		return ret;
	count_reason(REASON_ALLOWED_NEW, ci->pkt_len);
	if (!(ct_flags & CT_F_AUDIT) && cfg && (cfg->flags & CFG_F_TRACE_ALLOWED)) {
		fd->rule_id = rule_id;
		emit_event(ci, fd, VERDICT_ALLOWED, REASON_ALLOWED_NEW);
	}
	return CT_NEW;
}

#endif /* BASTION_VERDICT_H */
