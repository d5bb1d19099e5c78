/*
 * deadline.c — the min-heap of deadlines (see deadline.h).
 */
#include "deadline.h"

#include <stdlib.h>

#include "buf.h"

static void place(bw_dheap *h, size_t i, bw_dnode *n)
{
    h->items[i] = n;
    n->at = i;
}

static void up(bw_dheap *h, size_t i)
{
    bw_dnode *n = h->items[i];
    while (i > 0 && h->items[(i - 1) / 2]->deadline > n->deadline) {
        place(h, i, h->items[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    place(h, i, n);
}

static void down(bw_dheap *h, size_t i)
{
    bw_dnode *n = h->items[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->len)
            break;
        if (c + 1 < h->len && h->items[c + 1]->deadline < h->items[c]->deadline)
            c++;
        if (h->items[c]->deadline >= n->deadline)
            break;
        place(h, i, h->items[c]);
        i = c;
    }
    place(h, i, n);
}

void bw_dheap_free(bw_dheap *h)
{
    free(h->items);
    h->items = NULL;
    h->len = h->cap = 0;
}

void bw_dheap_set(bw_dheap *h, bw_dnode *n, int64_t deadline)
{
    n->deadline = deadline;
    if (n->at == SIZE_MAX) {
        if (h->len == h->cap) {
            h->cap = h->cap ? h->cap * 2 : 64;
            h->items = bw_xrealloc(h->items, h->cap * sizeof(*h->items));
        }
        place(h, h->len++, n);
        up(h, n->at);
        return;
    }
    up(h, n->at);
    down(h, n->at);
}

bw_dnode *bw_dheap_top(const bw_dheap *h)
{
    return h->len ? h->items[0] : NULL;
}

void bw_dheap_remove(bw_dheap *h, bw_dnode *n)
{
    size_t i = n->at;
    bw_dnode *last = h->items[--h->len];
    n->at = SIZE_MAX;
    if (last == n)
        return;
    place(h, i, last);
    up(h, i);
    down(h, last->at);
}
