// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * ct_gc: reclaims expired conntrack entries. bastion_ct is a plain hash (an
 * LRU let one container's flood evict everybody's idle connections), so an
 * entry nobody looks up again stays until something deletes it: this
 * program, which the agent runs through BPF_PROG_TEST_RUN every few seconds
 * (it is attached to nothing). It walks the table once, deletes what has
 * expired, gives each entry's charge back to its endpoint (bastion_ct_use)
 * and returns how many it deleted. Deleting in the kernel keeps the
 * per-endpoint counts exact: only the CPU whose delete succeeds uncharges.
 */
#include "lib/common.h"
#include "lib/conntrack.h"

struct gc_ctx {
	__u64 now;
	__u32 deleted;
};

static long ct_gc_one(void *map, struct ct_key *key, struct ct_entry *e, struct gc_ctx *g)
{
	struct ct_key k = *key;
	__u32 owner = e->owner_id;

	if (e->expires > g->now)
		return 0;
	if (bpf_map_delete_elem(&bastion_ct, &k) == 0) {
		ct_uncharge(owner);
		g->deleted++;
	}
	return 0;
}

SEC("tc")
int ct_gc(struct __sk_buff *skb)
{
	struct gc_ctx g = { .now = ct_now() };

	bpf_for_each_map_elem(&bastion_ct, ct_gc_one, &g, 0);
	return g.deleted;
}

char _license[] SEC("license") = "Dual BSD/GPL";
