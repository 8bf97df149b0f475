/*
 * tools/mmkit/cmd_ckpt.c - `mmkit ckpt info|verify|compact|write|restore`:
 * inspect, check and fold checkpoint image chains (see mmkit/ckpt.h,
 * mmkit-ckpt(1)); `write` makes a synthetic chain and `restore` maps a
 * chain into this process, for trying it out and for the shell tests.
 */
#include "cmd.h"

#include <mmkit.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

static int usage(void)
{
	fprintf(stderr,
		"usage: mmkit ckpt info IMAGE|DIR\n"
		"       mmkit ckpt verify IMAGE|DIR\n"
		"       mmkit ckpt compact IMAGE [--prune]\n"
		"       mmkit ckpt write DIR [--mib N] [--deltas K] [--change PCT]\n"
		"       mmkit ckpt restore IMAGE|DIR [--same-addr]\n");
	return 2;
}

static bool is_dir(const char *p)
{
	struct stat sb;
	return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* FNV-1a over the region, to compare restores */
static uint64_t digest(const unsigned char *p, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 1099511628211ull;
	return h;
}

static void print_image(const char *path, bool brief)
{
	mmk_ckpt_info in;
	mmk_ckpt_region reg[256];
	int rc = mmk_ckpt_info_read(path, &in, reg, 256);
	if (rc < 0) {
		printf("%s: %s\n", path, mmk_strerror(rc));
		return;
	}
	int chain = mmk_ckpt_verify(path);
	if (brief) {
		printf("%-20llu %-8llu %-6s %10zu %12zu  %s\n", in.generation, in.parent,
		       in.parent ? "delta" : "full", in.pages, in.file_size,
		       chain > 0 ? "ok" : mmk_strerror(chain));
		return;
	}
	time_t t = (time_t)(in.created_ns / 1000000000ull);
	char when[64];
	strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime(&t));
	printf("image       %s\nversion     %u\ngeneration  %llu\nparent      %llu (%s)\n", path, in.version,
	       in.generation, in.parent, in.parent ? "delta" : "full image");
	printf("created     %s\npages       %zu\nfile size   %zu\n", when, in.pages, in.file_size);
	if (chain > 0)
		printf("chain       %d image(s), every page checked: ok\n", chain);
	else
		printf("chain       %s\n", mmk_strerror(chain));
	printf("regions     %zu\n", in.nregions);
	for (size_t i = 0; i < in.nregions && i < 256; i++)
		printf("  %-24s addr 0x%" PRIx64 "  %" PRIu64 " bytes\n", reg[i].name, reg[i].addr, reg[i].len);
}

static int cmd_info(const char *p)
{
	if (!is_dir(p)) {
		mmk_ckpt_info in;
		int rc = mmk_ckpt_info_read(p, &in, NULL, 0);
		if (rc < 0)
			return mmk_tool_fail(p, rc);
		print_image(p, false);
		return 0;
	}
	struct dirent **ents;
	int n = scandir(p, &ents, NULL, alphasort);
	if (n < 0)
		return mmk_tool_fail(p, -errno);
	printf("%-20s %-8s %-6s %10s %12s  %s\n", "generation", "parent", "kind", "pages", "bytes", "chain");
	int shown = 0;
	for (int i = 0; i < n; i++) {
		const char *nm = ents[i]->d_name;
		size_t l = strlen(nm);
		if (!strncmp(nm, "ckpt-", 5) && l > 4 && !strcmp(nm + l - 4, ".img")) {
			char path[4200];
			snprintf(path, sizeof path, "%s/%s", p, nm);
			print_image(path, true);
			shown++;
		} else if (!strncmp(nm, ".ckpt-", 6)) {
			printf("%-20s (half-written temp file: ignored, removed by the next checkpointer)\n", nm);
		}
		free(ents[i]);
	}
	free(ents);
	char latest[4200];
	if (mmk_ckpt_latest(p, latest, sizeof latest) == 0)
		printf("latest valid: %s\n", latest);
	else if (!shown)
		printf("no images\n");
	return 0;
}

static int cmd_verify(const char *p)
{
	int rc = mmk_ckpt_verify(p);
	if (rc < 0)
		return mmk_tool_fail(p, rc);
	char latest[4200];
	const char *img = p;
	if (is_dir(p) && mmk_ckpt_latest(p, latest, sizeof latest) == 0)
		img = latest;
	printf("%s: ok, chain of %d image(s)\n", img, rc);
	return 0;
}

static int cmd_compact(int argc, char **argv)
{
	const char *img = NULL;
	unsigned flags = 0;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--prune"))
			flags |= MMK_CKPT_PRUNE;
		else if (!img)
			img = argv[i];
		else
			return usage();
	}
	if (!img)
		return usage();
	int rc = mmk_ckpt_compact(img, flags);
	if (rc < 0)
		return mmk_tool_fail(img, rc);
	if (rc == 1)
		printf("%s: already a full image\n", img);
	else
		printf("%s: folded a chain of %d images into one full image%s\n", img, rc,
		       flags & MMK_CKPT_PRUNE ? "; older images removed" : "");
	return 0;
}

static int cmd_write(int argc, char **argv)
{
	const char *dir = NULL;
	size_t mib = 16;
	int deltas = 2;
	double pct = 1;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--mib") && i + 1 < argc)
			mib = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--deltas") && i + 1 < argc)
			deltas = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--change") && i + 1 < argc)
			pct = atof(argv[++i]);
		else if (argv[i][0] != '-' && !dir)
			dir = argv[i];
		else
			return usage();
	}
	if (!dir || !mib || deltas < 0 || pct < 0 || pct > 100)
		return usage();
	size_t len = mib << 20, np = len / 4096;
	unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return mmk_tool_fail("mmap", -errno);
	uint64_t x = 88172645463325252ull;
	for (size_t i = 0; i < len; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(m + i, &x, 8);
	}
	mmk_ckpt *c;
	int rc = mmk_ckpt_create(&c, dir, &(mmk_ckpt_opts){ .max_chain = 1000 });
	if (rc < 0)
		return mmk_tool_fail(dir, rc);
	if ((rc = mmk_ckpt_add(c, "synthetic", m, len)) < 0)
		return mmk_tool_fail("add", rc);
	for (int k = 0; k <= deltas; k++) {
		if (k) {
			size_t n = (size_t)((double)np * pct / 100);
			for (size_t j = 0; j < n; j++) {
				x ^= x << 13;
				x ^= x >> 7;
				x ^= x << 17;
				m[(x % np) * 4096 + (x >> 52)] ^= 0xff;
			}
		}
		rc = mmk_ckpt_start(c, MMK_CKPT_WAIT);
		if (rc < 0)
			return mmk_tool_fail("checkpoint", rc);
		mmk_ckpt_stats st;
		mmk_ckpt_stats_get(c, &st);
		printf("generation %d: %s, %zu pages, %.3f s, instant %.3f ms, digest %016" PRIx64 "\n", rc,
		       st.last_full ? "full" : "delta", st.last_pages, st.last_write_s, st.last_start_us / 1e3,
		       digest(m, len));
	}
	mmk_ckpt_destroy(c);
	munmap(m, len);
	return 0;
}

static int cmd_restore(int argc, char **argv)
{
	const char *p = NULL;
	unsigned flags = 0;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--same-addr"))
			flags |= MMK_CKPT_SAME_ADDR;
		else if (!p)
			p = argv[i];
		else
			return usage();
	}
	if (!p)
		return usage();
	mmk_ckpt_restored rs;
	int rc = mmk_ckpt_restart(p, flags, &rs);
	if (rc < 0)
		return mmk_tool_fail(p, rc);
	printf("generation %llu, chain of %u image(s)\n", rs.generation, rs.chain);
	for (size_t i = 0; i < rs.nregions; i++) {
		mmk_ckpt_region *r = &rs.regions[i];
		printf("  %-24s %" PRIu64 " bytes at %p (%s address), digest %016" PRIx64 "\n", r->name, r->len,
		       r->base, (uintptr_t)r->base == r->addr ? "same" : "other", digest(r->base, r->len));
		munmap(r->base, r->len);
	}
	mmk_ckpt_restored_free(&rs);
	return 0;
}

int mmk_cmd_ckpt(int argc, char **argv)
{
	if (argc < 3)
		return usage();
	const char *sub = argv[1];
	if (!strcmp(sub, "info") && argc == 3)
		return cmd_info(argv[2]);
	if (!strcmp(sub, "verify") && argc == 3)
		return cmd_verify(argv[2]);
	if (!strcmp(sub, "compact"))
		return cmd_compact(argc - 2, argv + 2);
	if (!strcmp(sub, "write"))
		return cmd_write(argc - 2, argv + 2);
	if (!strcmp(sub, "restore"))
		return cmd_restore(argc - 2, argv + 2);
	return usage();
}
