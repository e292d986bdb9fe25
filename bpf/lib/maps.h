/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Bastion datapath: every map, its key and its value, in one place.
 *
 * This header is a contract with the control plane: src/datapath/layout.ts
 * encodes and decodes exactly these structs (same field order, same sizes,
 * same byte order). Change one, change the other, and the round-trip tests
 * in test/unit/layout.test.ts.
 *
 * All maps are pinned by name under the pin root (default /sys/fs/bpf/bastion)
 * so that enforcement survives a restart or crash of the agent: the tc filters
 * keep the programs alive, and the programs keep using the pinned maps.
 *
 * Byte order: addresses and ports are kept in network byte order (__be32,
 * __be16) exactly as they appear in packets; identities, ifindexes and flags
 * are host byte order.
 */
#ifndef BASTION_MAPS_H
#define BASTION_MAPS_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* ---------------------------------------------------------------- sizes */

#define BASTION_MAX_ENDPOINTS	65536
#define BASTION_MAX_IPCACHE	65536
#define BASTION_MAX_POLICY	1048576
#define BASTION_MAX_NEIGH	1048576
#define BASTION_MAX_CT		262144
#define BASTION_MAX_FRAGS	8192
#define BASTION_MAX_EVENT_RL	16384	/* (endpoint, verdict, reason) event budgets */
#define BASTION_MAX_FLOW_SUM	65536	/* (source, destination, protocol, port) keys of allowed flows summarised */
/*
 * The flow ring buffer: 1 MiB, about 14,500 events (64 bytes and a record
 * header of 8 each). Events are rate
 * limited (about 100 a second per endpoint, verdict and reason) and the
 * reader is woken within 1 ms, or at once past an eighth of the buffer, so
 * it is far from full unless the daemon stalls; a full buffer loses events
 * and counts them (REASON_EVENTS_LOST). Its data pages are mapped twice in
 * the reader (for the wrap-around), so every MiB here is two of the
 * daemon's resident size: 4 MiB cost 8 MB for nothing measured.
 */
#define BASTION_EVENTS_BYTES	(1024 * 1024)
#define BASTION_NR_COUNTERS	64

/* ---------------------------------------------------------- identities */

/*
 * Identities are numbers the manager hands out; policy is keyed by them,
 * never by IP. They are never reused (the allocator is persisted in
 * bastion_state), so a container that inherits an IP never inherits rights.
 */
#define ID_ANY		0	/* wildcard peer in a policy key */
#define ID_HOST		1	/* any address of the host (gateway included) */
#define ID_WORLD	2	/* 0.0.0.0/0: everything not otherwise known */
#define ID_REMOTE_NODE	3	/* another node of the cluster (its underlay address): never world */
#define ID_FIRST_DYNAMIC 256	/* endpoints and CIDR prefixes from here on */

/* ------------------------------------------------------------ endpoints */

#define EP_F_AUDIT	(1U << 0)	/* this endpoint is in audit mode */

/* One managed container interface. Keyed by the host-side veth ifindex in
 * bastion_endpoints, and by IPv4 address in bastion_endpoints_ip. */
struct endpoint_info {
	__u32 identity;
	__u32 ifindex;		/* host-side veth (where the stack is attached) */
	__be32 ipv4;
	__u32 flags;		/* EP_F_* */
	__u8 mac[6];		/* the container's own MAC (container-side veth) */
	__u8 gw_mac[6];		/* MAC of the bridge (gateway) behind this endpoint */
};				/* 28 bytes */

/* ------------------------------------------------------------- ipcache */

#define IPC_F_HOST	(1U << 0)	/* the address belongs to the host */

struct ipcache_key {
	__u32 prefixlen;	/* LPM: bits of addr that must match */
	__be32 addr;
};

#define IPCACHE_PREFIX_HOST	((__u32)(sizeof(struct ipcache_key) - 4) * 8)	/* 32 */

struct ipcache_val {
	__u32 identity;
	__u32 flags;		/* IPC_F_* */
};

/* -------------------------------------------------------------- policy */

#define DIR_EGRESS	0	/* the endpoint sends to the peer */
#define DIR_INGRESS	1	/* the endpoint receives from the peer */

#define PROTO_ANY	0

/*
 * Longest-prefix-match key. Data bits, in order:
 *   ep_id(32) peer_id(32) direction(8) | proto(8) | dport(16)
 * A rule for every protocol and port has prefixlen 72; every port of one
 * protocol 80; one port 96; a port range is split by the manager into the
 * few prefixes that cover it exactly. peer_id ID_ANY is a wildcard peer,
 * looked up second.
 */
#define POLICY_PREFIX_FULL	((__u32)(sizeof(struct policy_key) - 4) * 8)	/* 96 */
#define POLICY_PREFIX_ANY_PORT	(POLICY_PREFIX_FULL - 16)			/* 80 */
#define POLICY_PREFIX_ANY_PROTO	(POLICY_PREFIX_ANY_PORT - 8)			/* 72 */

struct policy_key {
	__u32 prefixlen;
	__u32 ep_id;
	__u32 peer_id;
	__u8 direction;		/* DIR_* */
	__u8 proto;		/* IPPROTO_*, or PROTO_ANY */
	__be16 dport;
};				/* 16 bytes */

struct policy_val {
	__u32 rule_id;		/* which rule allowed it (reported in flow events) */
	__u32 flags;		/* reserved */
};

/* ----------------------------------------------------------- neighbours */

/* Present when ep_id may resolve peer_id's MAC through ARP: when either may
 * open a connection to the other (the answering side needs the MAC too).
 * peer_id ID_HOST stands for the gateway; ID_ANY for everyone (the endpoint
 * has a rule with a wildcard peer). */
struct neigh_key {
	__u32 ep_id;
	__u32 peer_id;
};

/* ------------------------------------------------------------ conntrack */

/* One entry per connection, for both directions: keyed by its 5-tuple with
 * the lower (address, port) end first, so saddr/daddr are not necessarily
 * the opener's (CT_F_KEY_SWAPPED says; src_id/dst_id always are). For ICMP
 * echo, sport is the echo identifier and dport is 0. */
struct ct_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};				/* 16 bytes */

#define CT_F_AUDIT		(1U << 0)	/* opened while policy would have denied */
#define CT_F_SEEN_REPLY		(1U << 1)
#define CT_F_CLOSING		(1U << 2)	/* FIN or RST seen */
#define CT_F_KEY_SWAPPED	(1U << 3)	/* the opener is the key's daddr/dport end */

struct ct_entry {
	__u64 expires;		/* CLOCK_MONOTONIC deadline, ns (coarse clock) */
	__u32 src_id;		/* identities at open time: a later packet whose */
	__u32 dst_id;		/* ends resolve to other identities is not ours */
	__u32 rule_id;
	__u32 flags;		/* CT_F_* */
	__u32 owner_id;		/* the local endpoint this entry is charged to */
	__u32 policy_epoch;	/* bastion_config.policy_epoch when the policy last allowed it */
};				/* 32 bytes */

/* Conntrack entries charged to one local endpoint (bastion_ct_use, keyed by
 * its identity): the endpoint whose program opened the entry, i.e. the
 * sender in from_container, the receiver in to_container. New connections
 * over the limit are dropped (ct-limit), so one container's flood cannot
 * take the whole table; entries are never evicted (bastion_ct is a plain
 * hash, not an LRU), so nobody's idle connection is pushed out. */
struct ct_use {
	__s64 entries;		/* changed with atomic adds only */
};

#define CT_DEFAULT_PER_ENDPOINT	(BASTION_MAX_CT / 4)

/* ------------------------------------------------------------ fragments */

/* Ports and verdict of a fragmented datagram, learnt from its first fragment
 * so that the later fragments (which carry no L4 header) get the same
 * verdict. Keyed by the hook that saw it too (ifindex, direction), so a
 * fragment seen on one interface never borrows what another one decided. */
struct frag_key {
	__be32 saddr;
	__be32 daddr;
	__be16 id;
	__u8 proto;
	__u8 trace;		/* TRACE_*: the hook that saw the first fragment */
	__u32 ifindex;
};				/* 16 bytes */

#define FRAG_VERDICT_DROPPED	0
#define FRAG_VERDICT_ALLOWED	1
#define FRAG_LIFETIME_S		30	/* the kernel's own reassembly timeout (ipfrag_time) */

struct frag_val {
	__u64 expires;		/* CLOCK_MONOTONIC deadline, ns (coarse clock) */
	__be16 sport;
	__be16 dport;
	__u32 verdict;		/* FRAG_VERDICT_* */
};				/* 16 bytes */

/* --------------------------------------------------------------- events */

#define VERDICT_ALLOWED	1	/* first packet of an allowed connection */
#define VERDICT_DROPPED	2
#define VERDICT_AUDIT	3	/* would have been dropped (audit mode) */
#define VERDICT_ARP_REPLY 4	/* the stack answered an ARP request */

#define TRACE_FROM_CONTAINER	0	/* seen on the container's way out */
#define TRACE_TO_CONTAINER	1	/* seen on the way into the container */
#define TRACE_FROM_OVERLAY	2	/* arrived through the tunnel device */

struct flow_event {
	__u64 ts_ns;		/* bpf_ktime_get_ns() */
	__u32 src_id;
	__u32 dst_id;
	__be32 saddr;		/* for ARP: sender and target IP */
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;		/* 0 for ARP */
	__u8 verdict;		/* VERDICT_* */
	__u8 reason;		/* REASON_* */
	__u8 trace;		/* TRACE_* */
	__u32 ifindex;		/* the endpoint's host-side veth */
	__u32 rule_id;		/* the sender's egress rule (for to_container: the receiver's ingress rule) */
	__u16 pkt_len;
	__be16 ethertype;
	__u32 suppressed;	/* events of this kind the rate limit held back before this one */
	__u32 ingress_rule_id;	/* from_container, a local receiver: its ingress rule */
	__u8 tcp_flags;		/* the packet's TCP flags (TCP_FLAG_*) */
	__u8 flags;		/* FLOW_F_* */
	__u16 pad;
	__be32 tunnel_saddr;	/* from_overlay: the outer source address (the sending node's underlay); 0 otherwise */
	__u32 pad2;
};				/* 64 bytes */

#define FLOW_F_REPLY	(1U << 0)	/* the packet is in a tracked connection's reply direction */
#define FLOW_F_INGRESS	(1U << 1)	/* decided by the receiver's ingress policy (from_container, a local receiver) */

/*
 * Allowed new connections, summarised per key (lib/summary.h): the first
 * connection of a key is an event, every later one only a count here, read
 * by the agent every few seconds and reported as one summary record per key
 * that moved. A connection audit mode let through is summarised under its
 * own key (FLOW_SUM_F_AUDIT). An LRU map: a key not seen for long makes way,
 * and its next connection is an event again.
 */
struct flow_sum_key {
	__u32 src_id;
	__u32 dst_id;
	__be16 dport;		/* 0 for ICMP */
	__u8 proto;
	__u8 flags;		/* FLOW_SUM_F_* */
};				/* 12 bytes */

#define FLOW_SUM_F_AUDIT	(1U << 0)	/* passed in audit mode although a policy would drop it */

struct flow_sum {
	__u64 first_ns;		/* bpf_ktime_get_ns() of the key's first connection */
	__u64 last_ns;		/* of its last one */
	__u64 count;		/* connections no event reported (the first one is an event) */
	/* the last connection's */
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__u8 reason;		/* FLOW_SUM_F_AUDIT: why it would have been dropped */
	__u8 trace;		/* TRACE_* */
	__u32 ifindex;
	__u32 rule_id;		/* the egress rule that allowed it (0: none, or audited) */
	__u32 ingress_rule_id;	/* the receiver's ingress rule */
};				/* 48 bytes */

/*
 * How far the agent has reported each key of bastion_flow_sum: written by
 * the agent only, pinned so that a restarted daemon neither reports a count
 * twice nor forgets what its predecessor had not reported yet.
 */
struct flow_sum_seen {
	__u64 first_ns;		/* the key's first_ns when reported: another one means the key was evicted and came back */
	__u64 count;		/* the count reported so far */
	__u64 last_ns;		/* the key's last_ns when reported: the next summary covers what came after */
};

/*
 * Event rate limit (lib/events.h): per (endpoint, verdict, reason), at most
 * bastion_config.events_per_sec events in each one-second window; the rest
 * are counted (REASON_EVENTS_SUPPRESSED) and the next event that goes out
 * carries how many were held back before it. When no event follows (the
 * burst ended), the agent reads what is still held back here and reports it
 * as a summary, with the last held-back packet's addresses.
 */
struct event_rl_key {
	__u32 ifindex;
	__u8 verdict;
	__u8 reason;
	__u16 pad;
};

struct event_rl {
	__u64 window_start;	/* ns, coarse monotonic clock */
	__u32 emitted;		/* events let out in this window */
	__u32 suppressed;	/* held back since the last event that went out */
	/* the last event held back */
	__u32 src_id;
	__u32 dst_id;
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 trace;		/* TRACE_* */
	__be16 ethertype;
};				/* 40 bytes */

#define EVENTS_DEFAULT_PER_SEC	100

/* ------------------------------------------------------------- reasons */

/* Index into bastion_counter. Below 16: packets that passed. */
#define REASON_ALLOWED_NEW	1	/* first packet of an allowed connection */
#define REASON_ESTABLISHED	2	/* belongs to a tracked connection */
#define REASON_REDIRECTED	3	/* handed straight to the peer's veth */
#define REASON_ARP_REPLIED	4	/* ARP request answered by the stack */
#define REASON_ARP_HOST		5	/* ARP exchanged with the host, allowed */
#define REASON_AUDITED		6	/* would be dropped, passed (audit mode) */
#define REASON_ENCAPSULATED	12	/* sent to a remote endpoint through the tunnel */
#define REASON_DECAPSULATED	13	/* from the tunnel, handed to a local endpoint */
/* Not packets: what happened to flow events. */
#define REASON_EVENTS_LOST	8	/* ring buffer full: event not written */
#define REASON_EVENTS_SUPPRESSED 9	/* held back by the event rate limit */

/* 16 and above: drops. */
#define REASON_NO_ENDPOINT	16	/* stack attached, endpoint not provisioned yet */
#define REASON_SPOOFED_MAC	17
#define REASON_SPOOFED_IP	18
#define REASON_SPOOFED_ARP	19	/* ARP sender MAC/IP not the container's */
#define REASON_SPOOFED_IFINDEX	20	/* a managed IP arriving on another interface */
#define REASON_ARP_DENIED	21	/* ARP for a container that is not a dependency */
#define REASON_ARP_UNSOLICITED	22	/* gratuitous ARP, replies, other ops */
#define REASON_POLICY_DENIED	23
#define REASON_HOST_DENIED	24
#define REASON_IPV6		25	/* IPv6 is not configured for managed containers */
#define REASON_MALFORMED	26	/* truncated or invalid headers */
#define REASON_FRAGMENT		27	/* fragment without a known first fragment */
#define REASON_UNSUPPORTED_L3	28	/* other ethertypes, VLAN tags */
#define REASON_UNSUPPORTED_L4	29	/* IP protocol Bastion does not track */
#define REASON_CT_INVALID	30	/* e.g. a SYN in the reply direction */
#define REASON_BROADCAST	31	/* IP broadcast or multicast */
#define REASON_NOT_FOR_ENDPOINT	32	/* flooded frame addressed to someone else */
#define REASON_TUNNEL_UNKNOWN_SOURCE	40	/* from the tunnel, but no remote endpoint we know has its source */
#define REASON_TUNNEL_SPOOFED	41	/* from the tunnel, claiming an identity its sender node does not hold */
#define REASON_NO_TUNNEL	42	/* for a remote endpoint, but this node has no tunnel device */
#define REASON_ICMP_UNRELATED	33	/* ICMP error not from an end (or the path) of the connection it names */
#define REASON_CT_LIMIT		34	/* the endpoint has its share of conntrack entries */
#define REASON_CT_FULL		35	/* the conntrack table is full */

struct counter {
	__u64 packets;
	__u64 bytes;
};

/* Per-endpoint traffic, keyed by host-side ifindex. "tx" is what the
 * container sent, "rx" what it was handed. */
struct ep_stats {
	__u64 tx_packets;
	__u64 tx_bytes;
	__u64 rx_packets;
	__u64 rx_bytes;
	__u64 drops;
};

/* --------------------------------------------------------------- config */

#define MODE_ENFORCE	0
#define MODE_AUDIT	1

#define CFG_F_TRACE_ALLOWED	(1U << 0)	/* emit events for new allowed connections */

struct bastion_config {
	__u32 mode;		/* MODE_*: global mode; EP_F_AUDIT adds per endpoint */
	__u32 flags;		/* CFG_F_* */
	__u32 ct_tcp_lifetime_s;	/* established TCP idle lifetime */
	__u32 ct_other_lifetime_s;	/* UDP, SCTP, ICMP, and TCP before it is established */
	__u32 ct_per_endpoint;	/* conntrack entries one endpoint may hold (0: CT_DEFAULT_PER_ENDPOINT) */
	__u32 events_per_sec;	/* events per (endpoint, verdict, reason) and second (0: EVENTS_DEFAULT_PER_SEC) */
	__u32 policy_epoch;	/* bumped by the manager after every change it writes: established
				 * connections of an older epoch are judged again (verdict.h) */
};

/* Control-plane state kept in bpffs so it survives the agent. Not read by
 * the programs. */
struct bastion_state {
	__u64 next_identity;
	__u64 generation;	/* bumped on every applied change */
};

/* -------------------------------------------------------------- cluster */

/*
 * An endpoint on another node, kept here only when it is a peer of a local
 * endpoint (its dependency in either direction). Keyed by its IPv4 address
 * in bastion_remote. Packets to it are encapsulated (VXLAN, the sender's
 * identity in the VNI) to node_ipv4; packets from it through the tunnel are
 * believed only when the VNI is its identity and the outer source is its
 * node (lib/encap.h).
 */
struct remote_endpoint {
	__u32 identity;
	__be32 node_ipv4;	/* underlay address of the node that holds it */
	__u8 mac[6];		/* its own MAC (answers ARP for it) */
	__u16 flags;		/* reserved */
};				/* 16 bytes */

#define BASTION_MAX_REMOTE	65536

/*
 * This node's tunnel: one VXLAN device in external (collect_md) mode, and
 * the underlay interface it sends on. With underlay_ifindex set, senders
 * build the VXLAN packet themselves and hand it to the underlay interface
 * (lib/encap.h, tunnel_encap_direct); without, they give it to the device.
 */
struct tunnel_info {
	__u32 ifindex;		/* the VXLAN device; 0: no tunnel (remote peers are dropped) */
	__be32 local_ipv4;	/* this node's underlay address */
	__u32 underlay_ifindex;	/* the underlay interface; 0: through the device */
	__be16 port;		/* the VXLAN UDP port (the device's) */
	__u16 flags;		/* reserved */
};				/* 16 bytes */

/* ----------------------------------------------------------------- maps */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BASTION_MAX_ENDPOINTS);
	__type(key, __u32);			/* host-side ifindex */
	__type(value, struct endpoint_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bastion_ep SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BASTION_MAX_ENDPOINTS);
	__type(key, __be32);			/* IPv4 address */
	__type(value, struct endpoint_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bastion_ep_ip SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, BASTION_MAX_IPCACHE);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_val);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bastion_ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, BASTION_MAX_POLICY);
	__type(key, struct policy_key);
	__type(value, struct policy_val);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bastion_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BASTION_MAX_NEIGH);
	__type(key, struct neigh_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bastion_neigh SEC(".maps");

/*
 * A plain hash, not an LRU: an LRU evicts whatever is least recently used
 * when it is full, so one container flooding new connections pushed out
 * other containers' idle ones. Here a full table refuses new entries
 * (ct-full), per-endpoint limits keep any one container from filling it
 * (bastion_ct_use), and expired entries are reclaimed by ct_gc.c, which the
 * agent runs periodically.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BASTION_MAX_CT);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bastion_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BASTION_MAX_ENDPOINTS);
	__type(key, __u32);			/* endpoint identity */
	__type(value, struct ct_use);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bastion_ct_use SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, BASTION_MAX_FRAGS);
	__type(key, struct frag_key);
	__type(value, struct frag_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bastion_frags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, BASTION_EVENTS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bastion_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, BASTION_MAX_EVENT_RL);
	__type(key, struct event_rl_key);
	__type(value, struct event_rl);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bastion_event_rl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, BASTION_MAX_FLOW_SUM);
	__type(key, struct flow_sum_key);
	__type(value, struct flow_sum);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bastion_flow_sum SEC(".maps");

/* Control-plane state (see struct flow_sum_seen): the programs never touch it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, BASTION_MAX_FLOW_SUM);
	__type(key, struct flow_sum_key);
	__type(value, struct flow_sum_seen);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bastion_flow_seen SEC(".maps");

/*
 * Deferred ring buffer wake-ups (lib/events.h), one slot per CPU. Kernel
 * state only: the control plane never reads or writes it.
 */
#define BASTION_WAKEUP_SLOTS	1024	/* CPUs beyond this wake the reader per event */

struct events_wakeup {
	struct bpf_timer timer;
	__u32 armed;		/* the timer will wake the reader */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BASTION_WAKEUP_SLOTS);
	__type(key, __u32);			/* CPU */
	__type(value, struct events_wakeup);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bastion_wakeup SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BASTION_NR_COUNTERS);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bastion_counter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, BASTION_MAX_ENDPOINTS);
	__type(key, __u32);			/* host-side ifindex */
	__type(value, struct ep_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bastion_ep_stat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bastion_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bastion_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bastion_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bastion_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BASTION_MAX_REMOTE);
	__type(key, __be32);			/* IPv4 address */
	__type(value, struct remote_endpoint);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bastion_remote SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tunnel_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bastion_tunnel SEC(".maps");

#endif /* BASTION_MAPS_H */
