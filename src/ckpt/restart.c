/*
 * ckpt/restart.c - mapping regions back from an image chain, and the
 * read-only image calls (info, verify, latest).
 *
 * Invariants: every page put into memory was checked against its CRC;
 * each page is read once, from the newest image of the chain that holds it
 * (the chain's full image holds them all); a failed restart unmaps what it
 * mapped.
 */
#include "ckpt/ckpt_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define CK_RUN_MAX (16u << 20)

static int map_region(const ck_rent *e, unsigned flags, void **base)
{
	void *want = (void *)(uintptr_t)e->addr, *p = MAP_FAILED;
	if (flags & (MMK_CKPT_SAME_ADDR | MMK_CKPT_REQUIRE_ADDR)) {
		p = mmap(want, e->len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (p != MAP_FAILED && p != want) { /* kernel < 4.17: a hint */
			munmap(p, e->len);
			p = MAP_FAILED;
		}
		if (p == MAP_FAILED && (flags & MMK_CKPT_REQUIRE_ADDR))
			return -EEXIST;
	}
	if (p == MAP_FAILED)
		p = mmap(NULL, e->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	*base = p;
	return 0;
}

/* read the pages of image im, region r, not yet done, into base */
static int fill_from(const ck_img *im, size_t r, char *base, uint8_t *done)
{
	const ck_rent *e = &im->rt[r];
	const uint32_t *crc = ck_crc(im, r);
	size_t k = 0;
	while (k < e->npages) {
		uint32_t p = ck_page_of(im, r, k);
		if (done[p >> 3] & (1u << (p & 7))) {
			k++;
			continue;
		}
		size_t j = k + 1;
		while (j < e->npages && (j - k) * MMK__PAGE < CK_RUN_MAX) {
			uint32_t q = ck_page_of(im, r, j);
			if (q != p + (j - k) || (done[q >> 3] & (1u << (q & 7))))
				break;
			j++;
		}
		char *dst = base + (size_t)p * MMK__PAGE;
		int rc = mmk__ck_pread(im->fd, dst, (j - k) * MMK__PAGE, e->data_off + k * MMK__PAGE);
		if (rc < 0)
			return rc;
		for (size_t t = k; t < j; t++) {
			if (mmk__ck_crc32c(0, dst + (t - k) * MMK__PAGE, MMK__PAGE) != crc[t])
				return MMK_ECORRUPT;
			uint32_t q = p + (uint32_t)(t - k);
			done[q >> 3] |= (uint8_t)(1u << (q & 7));
		}
		k = j;
	}
	return 0;
}

static int restart_image(const char *path, unsigned flags, mmk_ckpt_restored *out)
{
	ck_img *ch;
	size_t n;
	int rc = mmk__ck_chain_open(path, &ch, &n);
	if (rc < 0)
		return rc;
	size_t nr = ch[0].h.nregions;
	mmk_ckpt_region *reg = calloc(nr, sizeof *reg);
	if (!reg) {
		mmk__ck_chain_close(ch, n);
		return -ENOMEM;
	}
	size_t mapped = 0;
	for (; mapped < nr; mapped++) {
		const ck_rent *e = &ch[0].rt[mapped];
		memcpy(reg[mapped].name, e->name, CK_NAME_MAX);
		reg[mapped].addr = e->addr;
		reg[mapped].len = e->len;
		if ((rc = map_region(e, flags, &reg[mapped].base)) < 0)
			goto fail;
		size_t np = e->len / MMK__PAGE;
		uint8_t *done = calloc(np / 8 + 1, 1);
		if (!done) {
			rc = -ENOMEM;
			mapped++;
			goto fail;
		}
		for (size_t k = 0; k < n && !rc; k++)
			rc = fill_from(&ch[k], mapped, reg[mapped].base, done);
		for (size_t p = 0; !rc && p < np; p++)
			if (!(done[p >> 3] & (1u << (p & 7))))
				rc = MMK_ECORRUPT; /* not reachable for a valid chain */
		free(done);
		if (rc < 0) {
			mapped++;
			goto fail;
		}
	}
	out->generation = ch[0].h.generation;
	out->chain = (unsigned)n;
	out->nregions = nr;
	out->regions = reg;
	mmk__ck_chain_close(ch, n);
	return 0;
fail:
	for (size_t i = 0; i < mapped; i++)
		if (reg[i].base)
			munmap(reg[i].base, reg[i].len);
	free(reg);
	mmk__ck_chain_close(ch, n);
	return rc;
}

int mmk_ckpt_restart(const char *path, unsigned flags, mmk_ckpt_restored *out)
{
	if (!path || !out)
		return -EINVAL;
	memset(out, 0, sizeof *out);
	struct stat sb;
	if (stat(path, &sb) < 0)
		return -errno;
	if (!S_ISDIR(sb.st_mode))
		return restart_image(path, flags, out);
	/* a directory: the newest image whose whole chain restores */
	uint64_t *g;
	size_t ng;
	int rc = mmk__ck_list(path, &g, &ng);
	if (rc < 0)
		return rc;
	int first = -ENOENT;
	rc = -ENOENT;
	for (size_t i = ng; i-- > 0;) {
		char p[PATH_MAX + 40];
		mmk__ck_name(p, sizeof p, path, g[i], false);
		rc = restart_image(p, flags, out);
		if (rc == 0 || rc == -ENOMEM || rc == -EEXIST)
			break;
		if (first == -ENOENT)
			first = rc;
	}
	free(g);
	return rc == 0 || rc == -ENOMEM || rc == -EEXIST ? rc : first;
}

void *mmk_ckpt_restored_find(const mmk_ckpt_restored *r, const char *name, size_t *len)
{
	for (size_t i = 0; r && name && i < r->nregions; i++)
		if (!strcmp(r->regions[i].name, name)) {
			if (len)
				*len = r->regions[i].len;
			return r->regions[i].base;
		}
	return NULL;
}

void mmk_ckpt_restored_free(mmk_ckpt_restored *r)
{
	if (!r)
		return;
	free(r->regions);
	r->regions = NULL;
	r->nregions = 0;
}

int mmk_ckpt_info_read(const char *image, mmk_ckpt_info *info, mmk_ckpt_region *regions, size_t max)
{
	if (!image || !info)
		return -EINVAL;
	ck_img im;
	int rc = mmk__ck_img_open(&im, image);
	if (rc < 0)
		return rc;
	memset(info, 0, sizeof *info);
	info->generation = im.h.generation;
	info->parent = im.h.parent;
	info->created_ns = im.h.created_ns;
	info->version = im.h.version;
	info->nregions = im.h.nregions;
	info->pages = im.h.npages;
	info->file_size = im.size;
	for (size_t i = 0; regions && i < max && i < im.h.nregions; i++) {
		memcpy(regions[i].name, im.rt[i].name, CK_NAME_MAX);
		regions[i].addr = im.rt[i].addr;
		regions[i].len = im.rt[i].len;
		regions[i].base = NULL;
	}
	mmk__ck_img_close(&im);
	return 0;
}

int mmk_ckpt_verify(const char *path)
{
	if (!path)
		return -EINVAL;
	ck_img *ch;
	size_t n;
	int rc = mmk__ck_chain_resolve(path, &ch, &n);
	if (rc < 0)
		return rc;
	char *buf = malloc(CK_RUN_MAX);
	if (!buf)
		rc = -ENOMEM;
	for (size_t k = 0; !rc && k < n; k++)
		for (size_t r = 0; !rc && r < ch[k].h.nregions; r++) {
			const ck_rent *e = &ch[k].rt[r];
			const uint32_t *crc = ck_crc(&ch[k], r);
			for (size_t j = 0; !rc && j < e->npages;) {
				size_t m = e->npages - j;
				if (m > CK_RUN_MAX / MMK__PAGE)
					m = CK_RUN_MAX / MMK__PAGE;
				rc = mmk__ck_pread(ch[k].fd, buf, m * MMK__PAGE, e->data_off + j * MMK__PAGE);
				for (size_t t = 0; !rc && t < m; t++)
					if (mmk__ck_crc32c(0, buf + t * MMK__PAGE, MMK__PAGE) != crc[j + t])
						rc = MMK_ECORRUPT;
				j += m;
			}
		}
	free(buf);
	mmk__ck_chain_close(ch, n);
	return rc < 0 ? rc : (int)n;
}

int mmk_ckpt_latest(const char *dir, char *buf, size_t len)
{
	if (!dir || !buf)
		return -EINVAL;
	ck_img *ch;
	size_t n;
	int rc = mmk__ck_chain_resolve(dir, &ch, &n);
	if (rc < 0)
		return rc;
	if (strlen(ch[0].path) >= len)
		rc = -ENAMETOOLONG;
	else
		strcpy(buf, ch[0].path);
	mmk__ck_chain_close(ch, n);
	return rc;
}
