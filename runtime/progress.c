// Progress bar / progress lines. See progress.h.
#include "progress.h"

#include <stdarg.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BAR_WIDTH 20

static double monotonic_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void progress_init(progress *p, FILE *out, int epochs, int64_t steps_per_epoch, int64_t every) {
    memset(p, 0, sizeof *p);
    p->out = out;
    p->tty = isatty(fileno(out));
    p->epochs = epochs;
    p->steps_per_epoch = steps_per_epoch;
    p->total_steps = (int64_t)epochs * steps_per_epoch;
    p->every = every > 0 ? every : 1;
    p->min_redraw_s = 0.1;
    p->clock = monotonic_s;
    p->t_start = p->t_last = -1;   // set by the first step, so set-up time is not counted
}

// "1:02:03" or "2:03".
static void fmt_duration(char *buf, size_t len, double s) {
    if (!(s >= 0) || s > 1e8) { snprintf(buf, len, "?"); return; }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, len, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, len, "%ld:%02ld", t / 60, t % 60);
}

// Loss, rate and ETA: the part of the line both modes share.
static void fmt_tail(progress *p, char *buf, size_t len, double loss, double now) {
    char eta[32];
    int64_t total = p->total_steps;
    if (p->steps_done > 1) {
        double per_step = (now - p->t_start) / (double)(p->steps_done - 1);
        fmt_duration(eta, sizeof eta, per_step * (double)(total - p->steps_done));
    } else {
        snprintf(eta, sizeof eta, "?");
    }
    snprintf(buf, len, "loss %.4f %.0f items/s ETA %s", loss, p->rate, eta);
}

void progress_step(progress *p, int epoch, int64_t step, double loss, int64_t items) {
    p->steps_done++;
    p->items_done += items;
    // where this epoch ends for this run: its last step, or sooner where the run's
    // steps (--max-steps, a resume's remaining steps) run out within it
    int64_t epoch_end = p->steps_per_epoch, left = p->total_steps - p->steps_done;
    if (left >= 0 && step + 1 + left < epoch_end) epoch_end = step + 1 + left;
    int last_of_epoch = step + 1 >= epoch_end;
    if (p->t_start < 0) {
        // Time from the end of the first step: it carries the warm-up (page faults,
        // JIT compiles, first data reads) that would skew the rate and the ETA.
        p->t_start = p->t_last = p->clock();
        p->items_at_last = p->items_done; p->steps_at_last = p->steps_done;
    }
    if (p->tty) {
        double now = p->clock();
        double dt = now - p->t_last;
        if (dt < p->min_redraw_s && !last_of_epoch && p->steps_done > 1) return;   // the common case: one clock read
        if (dt > 0) {
            double r = (double)(p->items_done - p->items_at_last) / dt;
            p->rate = p->rate > 0 ? 0.7 * p->rate + 0.3 * r : r;   // smooth the jitter of short windows
        }
        p->t_last = now; p->items_at_last = p->items_done; p->steps_at_last = p->steps_done;
        char bar[BAR_WIDTH + 1], tail[160];
        int fill = epoch_end > 0 ? (int)((step + 1) * BAR_WIDTH / epoch_end) : BAR_WIDTH;
        for (int i = 0; i < BAR_WIDTH; i++) bar[i] = i < fill ? '=' : i == fill ? '>' : ' ';
        bar[BAR_WIDTH] = 0;
        fmt_tail(p, tail, sizeof tail, loss, now);
        // \r back to the start, \033[K erases what a longer previous line left behind
        fprintf(p->out, "\repoch %d/%d [%s] %lld/%lld %s\033[K", epoch + 1, p->epochs, bar, (long long)(step + 1),
                (long long)epoch_end, tail);
        p->line_open = 1;
        if (last_of_epoch) { fputc('\n', p->out); p->line_open = 0; }   // each epoch leaves its last line
        fflush(p->out);
        return;
    }
    if ((step + 1) % p->every != 0 && !last_of_epoch) return;
    double now = p->clock();
    double dt = now - p->t_last;
    p->rate = dt > 0 ? (double)(p->items_done - p->items_at_last) / dt : 0;
    p->t_last = now; p->items_at_last = p->items_done; p->steps_at_last = p->steps_done;
    char tail[160];
    fmt_tail(p, tail, sizeof tail, loss, now);
    fprintf(p->out, "epoch %d/%d step %lld/%lld %s\n", epoch + 1, p->epochs, (long long)(step + 1),
            (long long)epoch_end, tail);
    fflush(p->out);
}

void progress_print(progress *p, const char *fmt, ...) {
    if (p->line_open) { fputs("\r\033[K", p->out); p->line_open = 0; }
    va_list ap;
    va_start(ap, fmt);
    vfprintf(p->out, fmt, ap);
    va_end(ap);
    fputc('\n', p->out);
    fflush(p->out);
}

void progress_finish(progress *p) {
    if (p->line_open) { fputc('\n', p->out); p->line_open = 0; }
    fflush(p->out);
}
