/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The verdict on an IPv4 packet between a local endpoint and a peer, shared
 * by both programs: conntrack first (established, reply, related), then, for
 * a new connection, the policy of every local end (the sender's egress, the
 * receiver's ingress), then a conntrack entry and the ALLOWED event.
 *
 * An established connection is judged again, once, after each policy
 * change (ct_recheck): a change that denies it cuts it at its next packet.
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
#include "summary.h"

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

/* Does audit mode let `ep`'s own policy pass what it denies? The host's
 * global mode, or that endpoint's flag (per-workload audit). */
static __always_inline int audited(const struct bastion_config *cfg, const struct endpoint_info *ep)
{
	return (cfg && cfg->mode == MODE_AUDIT) || (ep->flags & EP_F_AUDIT);
}

/*
 * One endpoint's policy on a new connection: `ep` towards `peer_id` in
 * `dir`. 0 when allowed (the allowing rule goes to *rule_id) or when only
 * audit mode lets it through (CT_F_AUDIT; *audit_reason says why it would
 * have been dropped, the summary reports it), else -reason.
 *
 * Audit mode is the endpoint's whose policy this is: the host's global mode,
 * or that endpoint's own flag. An audited sender does not audit an enforced
 * receiver's ingress (nor the other way round): per-workload audit lets a
 * workload's own policy be observed, it opens nobody else's door.
 */
static __always_inline int policy_verdict(const struct ctx_info *ci, struct flow_desc *fd,
					  const struct endpoint_info *ep, __u32 peer_id, __u8 dir,
					  const struct pkt_v4 *p, __u8 reason, const struct bastion_config *cfg,
					  __u32 *rule_id, __u32 *ct_flags, __u8 *audit_reason)
{
	__be16 dport = p->proto == IPPROTO_ICMP ? 0 : p->dport;
	__u32 rule = policy_allows(ep->identity, peer_id, dir, p->proto, dport);

	if (rule) {
		*rule_id = rule;
		return 0;
	}
	if (dir == DIR_INGRESS)
		fd->flags |= FLOW_F_INGRESS;
	if (!audited(cfg, ep))
		return -reason;
	count_reason(REASON_AUDITED, ci->pkt_len);
	if (!*audit_reason)
		*audit_reason = reason;
	else
		fd->flags &= ~FLOW_F_INGRESS;	/* the egress check came first: its reason is reported */
	*ct_flags |= CT_F_AUDIT;
	return 0;
}

/*
 * An established connection, judged again after a policy change: the
 * manager bumps bastion_config.policy_epoch after every change it writes
 * (after its last map write, so only a whole change is ever judged), and a
 * connection whose entry carries an older epoch meets the policy of its
 * original direction once more, as a new connection would: the original
 * sender's egress and the original receiver's ingress, for each that is a
 * local endpoint. Denied (and no audit mode to let it through): -reason,
 * and the caller cuts it. Allowed: the entry takes the current epoch. One
 * or two LPM lookups per connection and change, none otherwise: the epoch
 * compare is all a packet pays while the policy stands still.
 *
 * A change that keeps a connection allowed keeps it allowed at every step
 * of its writes (src/policy/diff.ts), so a packet judged while the next
 * change is being written is never cut by that change's intermediate state.
 */
static __always_inline int ct_recheck(const struct pkt_v4 *p,
				      const struct conn_ends *c, const struct bastion_config *cfg,
				      const struct ct_found *f)
{
	/* the ends as the connection was opened: a reply travels the other way */
	const struct endpoint_info *sender = f->reply ? c->receiver : c->sender;
	const struct endpoint_info *receiver = f->reply ? c->sender : c->receiver;
	__u8 sender_is_host = f->reply ? c->dst_is_host : c->src_is_host;
	__u8 receiver_is_host = f->reply ? c->src_is_host : c->dst_is_host;
	__be16 dport = p->proto == IPPROTO_ICMP ? 0 : (f->reply ? p->sport : p->dport);

	if (sender && !policy_allows(sender->identity, f->e->dst_id, DIR_EGRESS, p->proto, dport) &&
	    !audited(cfg, sender))
		return receiver_is_host ? -REASON_HOST_DENIED : -REASON_POLICY_DENIED;
	if (receiver && !policy_allows(receiver->identity, f->e->src_id, DIR_INGRESS, p->proto, dport) &&
	    !audited(cfg, receiver))
		return sender_is_host ? -REASON_HOST_DENIED : -REASON_POLICY_DENIED;
	return 0;
}

/*
 * The verdict on one IPv4 packet: a CT_* class when it may go on, or
 * -REASON_* (policy-denied, host-denied, ct-invalid, icmp-unrelated,
 * ct-limit, ct-full). A new connection allowed (or let through by audit
 * mode) is summarised (lib/summary.h): an event for its key's first one,
 * a count for the others.
 */
static __always_inline int conn_verdict(const struct ctx_info *ci, struct flow_desc *fd,
					const struct pkt_v4 *p, const struct conn_ends *c,
					const struct bastion_config *cfg)
{
	__u32 rule_id = 0, egress_rule = 0, ingress_rule = 0, ct_flags = 0;
	__u8 audit_reason = 0;
	int ct, ret;

	struct ct_found found = {};

	fd->tcp_flags = p->proto == IPPROTO_TCP ? p->tcp_flags : 0;
	ct = ct_lookup(p, c->src_id, c->dst_id, cfg, c->via_gateway, &rule_id, &found);
	if (found.reply)
		fd->flags |= FLOW_F_REPLY;
	if (found.e && cfg && found.e->policy_epoch != cfg->policy_epoch) {
		ret = ct_recheck(p, c, cfg, &found);
		if (IS_ERR(ret)) {
			/* cut: the entry goes, and the connection's next packets are new ones the policy denies */
			ct_delete(&found.key, found.e->owner_id);
			return ret;
		}
		found.e->policy_epoch = cfg->policy_epoch;
	}
	if (ct != CT_NEW)
		return ct;
	/* Only an echo request opens an ICMP "connection". */
	if (p->proto == IPPROTO_ICMP && p->icmp_type != ICMP_ECHO)
		return -REASON_CT_INVALID;
	if (c->sender) {
		ret = policy_verdict(ci, fd, c->sender, c->dst_id, DIR_EGRESS, p,
				     c->dst_is_host ? REASON_HOST_DENIED : REASON_POLICY_DENIED, cfg,
				     &egress_rule, &ct_flags, &audit_reason);
		if (IS_ERR(ret))
			return ret;
	}
	/* A local receiver's ingress. In from_container its own hook will not
	 * see this packet (direct forwarding), so it is checked here. */
	if (c->receiver) {
		ret = policy_verdict(ci, fd, c->receiver, c->src_id, DIR_INGRESS, p,
				     c->src_is_host ? REASON_HOST_DENIED : REASON_POLICY_DENIED, cfg,
				     &ingress_rule, &ct_flags, &audit_reason);
		if (IS_ERR(ret))
			return ret;
	}
	/* The rule the connection is remembered by: the deciding side's. */
	rule_id = c->sender ? egress_rule : ingress_rule;
	ret = ct_create(p, c->src_id, c->dst_id, rule_id ? rule_id : ingress_rule, ct_flags, c->owner_id, cfg);
	if (IS_ERR(ret))
		return ret;
	count_reason(REASON_ALLOWED_NEW, ci->pkt_len);
	if (cfg && (cfg->flags & CFG_F_TRACE_ALLOWED)) {
		fd->rule_id = rule_id;
		fd->ingress_rule_id = c->sender ? ingress_rule : 0;
		flow_summarise(ci, fd, audit_reason);
	}
	return CT_NEW;
}

#endif /* BASTION_VERDICT_H */
