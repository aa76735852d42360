/* SPDX-License-Identifier: MIT */
/*
 * perf/report.c - the benchmarks' JSON report and plot data (see
 * bench_util.h: bench_json_*). When CMESH_BENCH_JSON names a directory,
 * the benchmark's parent process writes <dir>/<bench>.json and one
 * <bench>-<scenario>.dat per scenario (percentile, then a column per row)
 * at exit; scripts/perf draws the .dat files with gnuplot.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "bench_util.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

/* ---------------------------------------------------------------------- */
/* JSON report                                                            */

struct json_row {
	char *scenario, *row, *rate_unit; /* rate_unit: NULL, no rate */
	uint64_t n, nlat;		  /* nlat: 0, no latencies */
	double p50, p99, p999, rate, rate_lo, rate_hi;
	double q[BENCH_NQ];
};

struct json_target {
	char *what, *value, *limit;
	bool pass;
};

/* The recorder: only the process that turned it on writes. */
static struct {
	int state; /* 0: not looked yet, 1: on, -1: off */
	pid_t pid;
	const char *dir;
	char *cpu, *kernel, *flags, *clock, *cpus, *version;
	bool smoke, complete;
	int disturbed; /* -1: not known */
	struct json_row *rows;
	size_t nrows;
	struct json_target *targets;
	size_t ntargets;
	char *with[8][2]; /* .dat of [0] also has the rows of [1] */
	size_t nwith;
} json;

static void json_write(void);

/* CMESH_BENCH_JSON is set and this is the process that writes. */
static bool json_on(void)
{
	if (bench_is_child)
		return false;
	if (json.state == 0) {
		const char *d = getenv("CMESH_BENCH_JSON");

		json.state = d && *d ? 1 : -1;
		if (json.state > 0) {
			json.dir = d;
			json.pid = getpid();
			json.disturbed = -1;
			if (atexit(json_write) != 0)
				json.state = -1;
		}
	}
	return json.state > 0 && getpid() == json.pid;
}

/* A copy of s without leading and trailing spaces (dies on ENOMEM). */
static char *json_dup(const char *s)
{
	size_t n;
	char *d;

	while (*s == ' ')
		s++;
	n = strlen(s);
	while (n && s[n - 1] == ' ')
		n--;
	d = malloc(n + 1);
	if (!d)
		bench_die("CMESH_BENCH_JSON", ENOMEM);
	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

/* Grows array v of *n items of `sz` by one zeroed item (*item); returns v. */
static void *json_push(void *v, size_t *n, size_t sz, void **item)
{
	char *p = realloc(v, (*n + 1) * sz);

	if (!p)
		bench_die("CMESH_BENCH_JSON", ENOMEM);
	*item = p + *n * sz;
	memset(*item, 0, sz);
	(*n)++;
	return p;
}

static struct json_row *json_row_new(const char *scenario, const char *row)
{
	struct json_row *x;
	void *item;

	if (!json_on())
		return NULL;
	json.rows =
		json_push(json.rows, &json.nrows, sizeof(*json.rows), &item);
	x = item;
	if ((!scenario || !*scenario) && json.nrows > 1)
		x->scenario = json_dup(json.rows[json.nrows - 2].scenario);
	else
		x->scenario = json_dup(scenario ? scenario : "");
	x->row = json_dup(row ? row : "");
	return x;
}

void bench_json_header(const char *cpu, const char *kernel, const char *flags,
		       const char *clk, const char *cpus, const char *version,
		       bool smoke)
{
	if (!json_on())
		return;
	free(json.cpu);
	free(json.kernel);
	free(json.flags);
	free(json.clock);
	free(json.cpus);
	free(json.version);
	json.cpu = json_dup(cpu);
	json.kernel = json_dup(kernel);
	json.flags = json_dup(flags);
	json.clock = json_dup(clk);
	json.cpus = json_dup(cpus);
	json.version = json_dup(version);
	json.smoke = smoke;
}

/* disturbed: 1, 0, or -1 (not known). */
void bench_json_footer(int disturbed)
{
	if (!json_on())
		return;
	json.disturbed = disturbed;
	json.complete = true;
}

void bench_json_result(const char *scenario, const char *row,
		       const struct bench_result *r, const char *rate_unit)
{
	struct json_row *x = json_row_new(scenario, row);

	if (!x)
		return;
	x->n = r->n;
	if (r->nlat) {
		x->nlat = r->nlat;
		x->p50 = r->p50;
		x->p99 = r->p99;
		x->p999 = r->p999;
		memcpy(x->q, r->q, sizeof(x->q));
	}
	if (rate_unit) {
		x->rate_unit = json_dup(rate_unit);
		x->rate = r->rate;
		x->rate_lo = r->rate_lo;
		x->rate_hi = r->rate_hi;
	}
}

void bench_json_rate(const char *scenario, const char *row, uint64_t n,
		     double rate, const char *unit)
{
	struct json_row *x = json_row_new(scenario, row);

	if (!x)
		return;
	x->n = n;
	x->rate_unit = json_dup(unit);
	x->rate = rate;
}

void bench_json_target(const char *what, const char *value, const char *limit,
		       bool pass)
{
	struct json_target *t;
	void *item;

	if (!json_on())
		return;
	json.targets = json_push(json.targets, &json.ntargets,
				 sizeof(*json.targets), &item);
	t = item;
	t->what = json_dup(what);
	t->value = json_dup(value);
	t->limit = json_dup(limit);
	t->pass = pass;
}

void bench_json_plot_with(const char *scenario, const char *other)
{
	if (!json_on() ||
	    json.nwith == sizeof(json.with) / sizeof(json.with[0]))
		return;
	json.with[json.nwith][0] = json_dup(scenario);
	json.with[json.nwith][1] = json_dup(other);
	json.nwith++;
}

/* A JSON string: quotes, backslashes and bytes < 0x20 or > 0x7e escaped. */
static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20 || *p > 0x7e)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

/* A JSON number, or null if v is not finite. */
static void json_num(FILE *f, double v)
{
	if (isfinite(v))
		fprintf(f, "%.6g", v);
	else
		fputs("null", f);
}

/* `, "key": "s"` (nothing if s is NULL). */
static void json_kv_str(FILE *f, const char *key, const char *s)
{
	if (!s)
		return;
	fprintf(f, ", \"%s\": ", key);
	json_str(f, s);
}

static void json_kv_num(FILE *f, const char *key, double v)
{
	fprintf(f, ", \"%s\": ", key);
	json_num(f, v);
}

static void json_put_row(FILE *f, const struct json_row *x)
{
	fputs("{\"scenario\": ", f);
	json_str(f, x->scenario);
	json_kv_str(f, "row", x->row);
	fprintf(f, ", \"n\": %" PRIu64, x->n);
	if (x->nlat) {
		fprintf(f, ", \"unit\": \"ns\", \"samples\": %" PRIu64,
			x->nlat);
		json_kv_num(f, "p50", x->p50);
		json_kv_num(f, "p99", x->p99);
		json_kv_num(f, "p999", x->p999);
	} else {
		json_kv_str(f, "unit", x->rate_unit);
	}
	if (x->rate_unit) {
		json_kv_num(f, "rate", x->rate);
		if (x->nlat)
			json_kv_str(f, "rate_unit", x->rate_unit);
		if (x->rate_hi > 0) {
			json_kv_num(f, "rate_min", x->rate_lo);
			json_kv_num(f, "rate_max", x->rate_hi);
		}
	}
	if (x->nlat) {
		fputs(", \"quantiles\": [", f);
		for (int i = 0; i < BENCH_NQ; i++) {
			if (i)
				fputs(", ", f);
			json_num(f, x->q[i]);
		}
		fputc(']', f);
	}
	fputc('}', f);
}

static void json_put(FILE *f)
{
	fputs("{\"bench\": ", f);
	json_str(f, bench_name);
	fputs(",\n \"header\": {\"smoke\": ", f);
	fputs(json.smoke ? "true" : "false", f);
	json_kv_str(f, "cpu", json.cpu);
	json_kv_str(f, "kernel", json.kernel);
	json_kv_str(f, "cc", json.cpu ? BENCH_CC __VERSION__ : NULL);
	json_kv_str(f, "flags", json.flags);
	json_kv_str(f, "clock", json.clock);
	json_kv_str(f, "cpus", json.cpus);
	json_kv_str(f, "cmesh", json.version);
	if (json.disturbed >= 0)
		fprintf(f, ", \"disturbed\": %s",
			json.disturbed ? "true" : "false");
	fprintf(f, ", \"complete\": %s},\n \"rows\": [",
		json.complete ? "true" : "false");
	for (size_t i = 0; i < json.nrows; i++) {
		fputs(i ? ",\n  " : "\n  ", f);
		json_put_row(f, &json.rows[i]);
	}
	fputs("],\n \"targets\": [", f);
	for (size_t i = 0; i < json.ntargets; i++) {
		const struct json_target *t = &json.targets[i];

		fputs(i ? ",\n  " : "\n  ", f);
		fputs("{\"what\": ", f);
		json_str(f, t->what);
		json_kv_str(f, "value", t->value);
		json_kv_str(f, "limit", t->limit);
		json_kv_str(f, "result", t->pass ? "PASS" : "FAIL");
		fputc('}', f);
	}
	fputs("]}\n", f);
}

/*
 * Writes path (through path.tmp, renamed) with put(f, arg); warns on
 * stderr on failure.
 */
static void json_file(const char *path, void (*put)(FILE *f, const void *arg),
		      const void *arg)
{
	char tmp[4200];
	FILE *f;
	bool ok;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)) {
		errno = ENAMETOOLONG;
		goto out_warn;
	}
	f = fopen(tmp, "w");
	if (!f)
		goto out_warn;
	errno = 0;
	put(f, arg);
	ok = !ferror(f);
	if (fclose(f) != 0 || !ok) {
		if (!errno)
			errno = EIO;
		unlink(tmp);
		goto out_warn;
	}
	if (rename(tmp, path) == 0)
		return;
	unlink(tmp);
out_warn:
	fprintf(stderr, "%s: CMESH_BENCH_JSON: cannot write %s: %s\n",
		bench_name, path, strerror(errno));
}

static void json_put_report(FILE *f, const void *arg)
{
	(void)arg;
	json_put(f);
}

/* The rows with latencies of the .dat of scenario `scen`. */
static bool json_in_dat(const char *scen, const struct json_row *x)
{
	if (!x->nlat)
		return false;
	if (strcmp(scen, x->scenario) == 0)
		return true;
	for (size_t i = 0; i < json.nwith; i++)
		if (strcmp(scen, json.with[i][0]) == 0 &&
		    strcmp(x->scenario, json.with[i][1]) == 0)
			return true;
	return false;
}

static void json_put_dat(FILE *f, const void *arg)
{
	const char *scen = arg;

	fprintf(f, "# %s\t%s\n# percentile", bench_name, scen);
	for (size_t i = 0; i < json.nrows; i++)
		if (json_in_dat(scen, &json.rows[i]))
			fprintf(f, "\t%s", json.rows[i].row);
	fputc('\n', f);
	for (int q = 0; q < BENCH_NQ; q++) {
		fprintf(f, "%d", q);
		for (size_t i = 0; i < json.nrows; i++) {
			if (!json_in_dat(scen, &json.rows[i]))
				continue;
			fputc('\t', f);
			json_num(f, json.rows[i].q[q]);
		}
		fputc('\n', f);
	}
}

/* s with every run of characters but [A-Za-z0-9.+-] as one '_'. */
static void json_file_name(char *buf, size_t len, const char *s)
{
	size_t o = 0;

	for (; *s && o + 1 < len; s++) {
		bool ok = (*s >= 'a' && *s <= 'z') ||
			  (*s >= 'A' && *s <= 'Z') ||
			  (*s >= '0' && *s <= '9') || strchr(".+-", *s);

		if (ok)
			buf[o++] = *s;
		else if (o && buf[o - 1] != '_')
			buf[o++] = '_';
	}
	while (o && buf[o - 1] == '_')
		o--;
	buf[o] = '\0';
}

/* atexit: the report and a .dat per scenario with latency rows. */
static void json_write(void)
{
	char path[4096], name[128];

	if (!json_on())
		return;
	if ((size_t)snprintf(path, sizeof(path), "%s/%s.json", json.dir,
			     bench_name) < sizeof(path))
		json_file(path, json_put_report, NULL);
	for (size_t i = 0; i < json.nrows; i++) {
		const struct json_row *x = &json.rows[i];
		bool seen = false;

		if (!x->nlat)
			continue;
		for (size_t j = 0; j < i && !seen; j++)
			seen = json.rows[j].nlat &&
			       strcmp(x->scenario, json.rows[j].scenario) == 0;
		if (seen)
			continue;
		json_file_name(name, sizeof(name), x->scenario);
		if ((size_t)snprintf(path, sizeof(path), "%s/%s-%s.dat",
				     json.dir, bench_name, name) < sizeof(path))
			json_file(path, json_put_dat, x->scenario);
	}
}

/* ---------------------------------------------------------------------- */
/* CPUs                                                                   */
