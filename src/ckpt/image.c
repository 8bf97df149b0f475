/*
 * ckpt/image.c - the checkpoint image format: CRC-32C, reading and checking
 * images, chains and directories, and the durable finish of a new image.
 *
 * Invariants: an image is only ever created as DIR/.ckpt-G.tmp and becomes
 * DIR/ckpt-G.img by rename after its data, metadata, header and trailer are
 * durable (fdatasync), followed by an fsync of DIR; so a file with the final
 * name is complete unless damaged afterwards, which the checks below detect:
 * header checksum, trailer magic/length/checksum, metadata checksum (which
 * covers every page through its CRC), and page CRCs when pages are read.
 */
#include "ckpt/ckpt_int.h"
#include "core/core.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* CRC-32C lives in core/crc32c.c (shared with rvm) */
uint32_t mmk__ck_crc32c(uint32_t crc, const void *p, size_t n)
{
	return mmk__crc32c(crc, p, n);
}

uint64_t mmk__ck_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double mmk__ck_mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int mmk__ck_pwrite(int fd, const void *p, size_t n, uint64_t off)
{
	return mmk__pwrite_all(fd, p, n, off);
}

int mmk__ck_pread(int fd, void *p, size_t n, uint64_t off)
{
	return mmk__pread_all(fd, p, n, off, MMK_ECORRUPT); /* shorter than its header says */
}

void mmk__ck_name(char *buf, size_t len, const char *dir, uint64_t gen, bool tmp)
{
	snprintf(buf, len, "%s/%sckpt-%016llx.%s", dir, tmp ? "." : "", (unsigned long long)gen,
		 tmp ? "tmp" : "img");
}

void mmk__ck_dirname(const char *path, char *dir, size_t len)
{
	const char *s = strrchr(path, '/');
	if (!s)
		snprintf(dir, len, ".");
	else if (s == path)
		snprintf(dir, len, "/");
	else
		snprintf(dir, len, "%.*s", (int)(s - path), path);
}

int mmk__ck_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = fsync(fd) < 0 ? -errno : 0;
	close(fd);
	return rc;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

int mmk__ck_list(const char *dir, uint64_t **gens, size_t *n)
{
	*gens = NULL;
	*n = 0;
	DIR *d = opendir(dir);
	if (!d)
		return -errno;
	size_t cap = 0;
	struct dirent *e;
	int rc = 0;
	while ((e = readdir(d))) {
		unsigned long long g;
		char tail[8];
		if (strlen(e->d_name) != 25 || sscanf(e->d_name, "ckpt-%16llx.%3s", &g, tail) != 2 ||
		    strcmp(tail, "img") || g == 0)
			continue;
		if (*n == cap) {
			cap = cap ? 2 * cap : 16;
			uint64_t *v = realloc(*gens, cap * sizeof *v);
			if (!v) {
				rc = -ENOMEM;
				break;
			}
			*gens = v;
		}
		(*gens)[(*n)++] = g;
	}
	closedir(d);
	if (rc < 0) {
		free(*gens);
		*gens = NULL;
		*n = 0;
		return rc;
	}
	if (*n)
		qsort(*gens, *n, sizeof **gens, cmp_u64);
	return 0;
}

void mmk__ck_img_close(ck_img *im)
{
	if (im->fd >= 0)
		close(im->fd);
	free(im->rt);
	free(im->meta);
	im->fd = -1;
	im->rt = NULL;
	im->meta = NULL;
}

static int check_header(const ck_hdr *h, uint64_t size)
{
	if (memcmp(h->magic, CK_MAGIC, 8) || h->version != CK_VERSION || h->page_size != MMK__PAGE ||
	    h->nregions == 0 || h->nregions > CK_MAX_REGIONS || h->hdr_size % MMK__PAGE ||
	    h->hdr_size < sizeof *h + h->nregions * sizeof(ck_rent) || h->generation == 0 ||
	    h->parent >= h->generation || h->meta_off != h->hdr_size ||
	    h->data_off < h->meta_off + h->meta_len || h->data_off % MMK__PAGE ||
	    h->file_len != h->data_off + h->npages * MMK__PAGE + sizeof(ck_trailer))
		return MMK_ECORRUPT;
	if (size != h->file_len)
		return MMK_ECORRUPT; /* truncated or extended */
	return 0;
}

int mmk__ck_img_open(ck_img *im, const char *path)
{
	memset(im, 0, sizeof *im);
	im->fd = -1;
	if (strlen(path) >= sizeof im->path)
		return -ENAMETOOLONG;
	strcpy(im->path, path);
	im->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (im->fd < 0)
		return -errno;
	struct stat sb;
	if (fstat(im->fd, &sb) < 0) {
		int e = -errno;
		mmk__ck_img_close(im);
		return e;
	}
	im->size = (uint64_t)sb.st_size;
	int rc;
	char *hblock = NULL;
	if (im->size < sizeof(ck_hdr) + sizeof(ck_trailer)) {
		rc = MMK_ECORRUPT;
		goto fail;
	}
	if ((rc = mmk__ck_pread(im->fd, &im->h, sizeof im->h, 0)) < 0)
		goto fail;
	if ((rc = check_header(&im->h, im->size)) < 0)
		goto fail;
	hblock = malloc(im->h.hdr_size);
	im->meta = malloc(im->h.meta_len ? im->h.meta_len : 1);
	im->rt = malloc(im->h.nregions * sizeof(ck_rent));
	if (!hblock || !im->meta || !im->rt) {
		rc = -ENOMEM;
		goto fail;
	}
	if ((rc = mmk__ck_pread(im->fd, hblock, im->h.hdr_size, 0)) < 0)
		goto fail;
	uint32_t want = im->h.hdr_crc;
	((ck_hdr *)hblock)->hdr_crc = 0;
	if (mmk__ck_crc32c(0, hblock, im->h.hdr_size) != want) {
		rc = MMK_ECORRUPT;
		goto fail;
	}
	((ck_hdr *)hblock)->hdr_crc = want;
	memcpy(im->rt, hblock + sizeof(ck_hdr), im->h.nregions * sizeof(ck_rent));
	if ((rc = mmk__ck_pread(im->fd, im->meta, im->h.meta_len, im->h.meta_off)) < 0)
		goto fail;
	ck_trailer t;
	if ((rc = mmk__ck_pread(im->fd, &t, sizeof t, im->h.file_len - sizeof t)) < 0)
		goto fail;
	uint32_t mc = mmk__ck_crc32c(mmk__ck_crc32c(0, hblock, im->h.hdr_size), im->meta, im->h.meta_len);
	if (memcmp(t.magic, CK_TMAGIC, 8) || t.generation != im->h.generation ||
	    t.file_len != im->h.file_len || t.meta_crc != mc ||
	    t.trailer_crc != mmk__ck_crc32c(0, &t, offsetof(ck_trailer, trailer_crc))) {
		rc = MMK_ECORRUPT;
		goto fail;
	}
	/* region table consistency */
	uint64_t pages = 0;
	for (uint32_t r = 0; r < im->h.nregions; r++) {
		const ck_rent *e = &im->rt[r];
		uint64_t np = e->len / MMK__PAGE;
		bool dense = e->flags & CK_RENT_DENSE;
		if (e->len == 0 || e->len % MMK__PAGE || e->npages > np || memchr(e->name, 0, CK_NAME_MAX) == NULL ||
		    (dense && e->npages != np) ||
		    e->crc_off < im->h.meta_off || e->crc_off + 4 * e->npages > im->h.meta_off + im->h.meta_len ||
		    (!dense && (e->idx_off < im->h.meta_off ||
				e->idx_off + 4 * e->npages > im->h.meta_off + im->h.meta_len)) ||
		    e->data_off != im->h.data_off + pages * MMK__PAGE) {
			rc = MMK_ECORRUPT;
			goto fail;
		}
		if (!dense) {
			const uint32_t *ix = ck_idx(im, r);
			for (uint64_t k = 0; k < e->npages; k++)
				if (ix[k] >= np || (k && ix[k] <= ix[k - 1])) {
					rc = MMK_ECORRUPT;
					goto fail;
				}
		}
		pages += e->npages;
	}
	if (pages != im->h.npages) {
		rc = MMK_ECORRUPT;
		goto fail;
	}
	if (im->h.parent == 0)
		for (uint32_t r = 0; r < im->h.nregions; r++)
			if (!(im->rt[r].flags & CK_RENT_DENSE)) {
				rc = MMK_ECORRUPT; /* a full image holds every page */
				goto fail;
			}
	free(hblock);
	return 0;
fail:
	free(hblock);
	mmk__ck_img_close(im);
	return rc;
}

void mmk__ck_chain_close(ck_img *chain, size_t n)
{
	for (size_t i = 0; chain && i < n; i++)
		mmk__ck_img_close(&chain[i]);
	free(chain);
}

static bool same_layout(const ck_img *a, const ck_img *b)
{
	if (a->h.nregions != b->h.nregions)
		return false;
	for (uint32_t r = 0; r < a->h.nregions; r++)
		if (strcmp(a->rt[r].name, b->rt[r].name) || a->rt[r].len != b->rt[r].len ||
		    a->rt[r].addr != b->rt[r].addr)
			return false;
	return true;
}

int mmk__ck_chain_open(const char *path, ck_img **chain, size_t *n)
{
	char dir[PATH_MAX], p[PATH_MAX + 40];
	mmk__ck_dirname(path, dir, sizeof dir);
	size_t cap = 8, k = 0;
	ck_img *v = calloc(cap, sizeof *v);
	if (!v)
		return -ENOMEM;
	int rc = mmk__ck_img_open(&v[k], path);
	if (rc < 0) {
		free(v);
		return rc;
	}
	k++;
	while (v[k - 1].h.parent) {
		if (k == cap) {
			ck_img *w = realloc(v, 2 * cap * sizeof *v);
			if (!w) {
				rc = -ENOMEM;
				goto fail;
			}
			v = w;
			cap *= 2;
		}
		uint64_t pg = v[k - 1].h.parent;
		mmk__ck_name(p, sizeof p, dir, pg, false);
		if ((rc = mmk__ck_img_open(&v[k], p)) < 0)
			goto fail;
		k++;
		if (v[k - 1].h.generation != pg || !same_layout(&v[k - 1], &v[0])) {
			rc = MMK_ECORRUPT;
			goto fail;
		}
	}
	*chain = v;
	*n = k;
	return 0;
fail:
	mmk__ck_chain_close(v, k);
	return rc;
}

int mmk__ck_chain_resolve(const char *path, ck_img **chain, size_t *n)
{
	struct stat sb;
	if (stat(path, &sb) < 0)
		return -errno;
	if (!S_ISDIR(sb.st_mode))
		return mmk__ck_chain_open(path, chain, n);
	uint64_t *g;
	size_t ng;
	int rc = mmk__ck_list(path, &g, &ng);
	if (rc < 0)
		return rc;
	rc = -ENOENT;
	for (size_t i = ng; i-- > 0;) {
		char p[PATH_MAX + 40];
		mmk__ck_name(p, sizeof p, path, g[i], false);
		int e = mmk__ck_chain_open(p, chain, n);
		if (e == 0) {
			rc = 0;
			break;
		}
		if (e == -ENOMEM) {
			rc = e;
			break;
		}
	}
	free(g);
	return rc;
}

int mmk__ck_finish(int fd, ck_hdr *h, const ck_rent *rt, const void *meta, const char *tmp,
		   const char *final, const char *dir, ck_times *tm)
{
	char *hblock = calloc(1, h->hdr_size);
	if (!hblock)
		return -ENOMEM;
	h->hdr_crc = 0;
	memcpy(hblock, h, sizeof *h);
	memcpy(hblock + sizeof *h, rt, h->nregions * sizeof(ck_rent));
	h->hdr_crc = mmk__ck_crc32c(0, hblock, h->hdr_size);
	((ck_hdr *)hblock)->hdr_crc = h->hdr_crc;
	ck_trailer t;
	memset(&t, 0, sizeof t);
	memcpy(t.magic, CK_TMAGIC, 8);
	t.generation = h->generation;
	t.file_len = h->file_len;
	t.meta_crc = mmk__ck_crc32c(mmk__ck_crc32c(0, hblock, h->hdr_size), meta, h->meta_len);
	t.trailer_crc = mmk__ck_crc32c(0, &t, offsetof(ck_trailer, trailer_crc));
	double t0 = mmk__ck_mono();
	int rc = mmk__ck_pwrite(fd, meta, h->meta_len, h->meta_off);
	if (!rc)
		rc = mmk__ck_pwrite(fd, &t, sizeof t, h->file_len - sizeof t);
	if (!rc)
		rc = mmk__ck_pwrite(fd, hblock, h->hdr_size, 0);
	free(hblock);
	double t1 = mmk__ck_mono();
	if (!rc && fdatasync(fd) < 0)
		rc = -errno;
	double t2 = mmk__ck_mono();
	if (!rc && rename(tmp, final) < 0)
		rc = -errno;
	if (!rc)
		rc = mmk__ck_fsync_dir(dir);
	if (tm) {
		tm->write += t1 - t0;
		tm->sync += t2 - t1;
		tm->publish += mmk__ck_mono() - t2;
	}
	return rc;
}
