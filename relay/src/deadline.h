/*
 * deadline.h — a min-heap of deadlines for timers kept per key (tenant signals, coalescing
 * windows). Items embed a bw_dnode; the heap stores pointers to those nodes.
 */
#ifndef BW_DEADLINE_H
#define BW_DEADLINE_H

#include <stddef.h>
#include <stdint.h>

typedef struct bw_dnode {
    int64_t deadline;
    size_t at; /* position in the heap; SIZE_MAX when not in it */
} bw_dnode;

typedef struct bw_dheap {
    bw_dnode **items;
    size_t len, cap;
} bw_dheap;

void bw_dheap_free(bw_dheap *h);
/* Inserts n (not in the heap) or moves it to its new deadline (in the heap). */
void bw_dheap_set(bw_dheap *h, bw_dnode *n, int64_t deadline);
/* The earliest node, or NULL. */
bw_dnode *bw_dheap_top(const bw_dheap *h);
void bw_dheap_remove(bw_dheap *h, bw_dnode *n);

#endif
