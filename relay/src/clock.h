/*
 * clock.h — the relay's two clocks: wall time in microseconds since the Unix epoch (what is
 * logged, stamped and compared with commit times) and a monotonic clock in milliseconds (timers
 * and waits, unmoved by clock changes).
 */
#ifndef BW_CLOCK_H
#define BW_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t bw_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static inline int64_t bw_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
