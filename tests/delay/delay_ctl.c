/*
 * delay_ctl.c - the delay-point controller (delay_ctl.h).
 */
#include "delay_ctl.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_POINTS 128

struct point {
    char name[64];
    unsigned long passes;
    unsigned long armed_at; /* passes when armed: nth counts from there */
    unsigned long nth;
    int armed;
    enum dctl_action action;
    unsigned long us;
    unsigned parked;
    unsigned long generation; /* bumped by dctl_release */
};

/* g_mu protects g_points and g_n; g_cv is broadcast on every change.  A
   leaf lock: nothing else is taken while it is held. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static struct point g_points[MAX_POINTS];
static int g_n;

/* The point named `name`, made on first use.  g_mu held. */
static struct point *find(const char *name)
{
    for (int i = 0; i < g_n; i++)
        if (strcmp(g_points[i].name, name) == 0)
            return &g_points[i];
    if (g_n == MAX_POINTS) {
        fprintf(stderr, "delay_ctl: too many points\n");
        abort();
    }
    struct point *p = &g_points[g_n++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    return p;
}

static void sleep_us(unsigned long us)
{
    struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

void tether_test_delay_hook(const char *name);

void tether_test_delay_hook(const char *name)
{
    pthread_mutex_lock(&g_mu);
    struct point *p = find(name);
    p->passes++;
    pthread_cond_broadcast(&g_cv);
    int hit = p->armed && (p->nth == 0 || p->passes - p->armed_at == p->nth);
    if (hit && p->action == DCTL_PARK) {
        unsigned long gen = p->generation;
        p->parked++;
        pthread_cond_broadcast(&g_cv);
        while (p->generation == gen)
            pthread_cond_wait(&g_cv, &g_mu);
        p->parked--;
    }
    unsigned long us = hit && p->action == DCTL_SLEEP ? p->us : 0;
    pthread_mutex_unlock(&g_mu);
    if (us)
        sleep_us(us);
}

void dctl_arm(const char *name, unsigned long nth, enum dctl_action action,
              unsigned long us)
{
    pthread_mutex_lock(&g_mu);
    struct point *p = find(name);
    p->armed = 1;
    p->armed_at = p->passes;
    p->nth = nth;
    p->action = action;
    p->us = us;
    pthread_mutex_unlock(&g_mu);
}

void dctl_wait_parked(const char *name)
{
    pthread_mutex_lock(&g_mu);
    while (find(name)->parked == 0)
        pthread_cond_wait(&g_cv, &g_mu);
    pthread_mutex_unlock(&g_mu);
}

void dctl_release(const char *name)
{
    pthread_mutex_lock(&g_mu);
    struct point *p = find(name);
    p->armed = 0;
    p->generation++;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

unsigned long dctl_passes(const char *name)
{
    pthread_mutex_lock(&g_mu);
    unsigned long n = find(name)->passes;
    pthread_mutex_unlock(&g_mu);
    return n;
}

void dctl_note(const char *name) { tether_test_delay_hook(name); }

void dctl_wait_passes(const char *name, unsigned long n)
{
    pthread_mutex_lock(&g_mu);
    while (find(name)->passes <= n)
        pthread_cond_wait(&g_cv, &g_mu);
    pthread_mutex_unlock(&g_mu);
}

int dctl_wait_either(const char *a, unsigned long na, const char *b,
                     unsigned long nb)
{
    pthread_mutex_lock(&g_mu);
    int which;
    for (;;) {
        if (find(a)->passes > na) {
            which = 0;
            break;
        }
        if (find(b)->passes > nb) {
            which = 1;
            break;
        }
        pthread_cond_wait(&g_cv, &g_mu);
    }
    pthread_mutex_unlock(&g_mu);
    return which;
}
