/*
 * ckpt/compact.c - folding an image chain into one full image.
 *
 * Invariants: the full image gets the generation of the chain's newest
 * image and replaces it by rename only once durable, so newer deltas that
 * name it as parent stay valid and a crash leaves the old chain; every page
 * copied is checked against its CRC first.
 */
#include "ckpt/ckpt_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CK_CBUF (2u << 20)

int mmk_ckpt_compact(const char *image, unsigned flags)
{
	if (!image || (flags & ~(unsigned)MMK_CKPT_PRUNE))
		return -EINVAL;
	ck_img *ch;
	size_t n;
	int rc = mmk__ck_chain_open(image, &ch, &n);
	if (rc < 0)
		return rc;
	if (n == 1) {
		mmk__ck_chain_close(ch, n);
		return 1;
	}
	char dir[PATH_MAX], tmp[PATH_MAX + 64];
	mmk__ck_dirname(image, dir, sizeof dir);
	const ck_img *top = &ch[0];
	size_t nr = top->h.nregions;
	ck_hdr h;
	memset(&h, 0, sizeof h);
	memcpy(h.magic, CK_MAGIC, 8);
	h.version = CK_VERSION;
	h.hdr_size = top->h.hdr_size;
	h.generation = top->h.generation;
	h.parent = 0;
	h.created_ns = top->h.created_ns;
	h.nregions = (uint32_t)nr;
	h.page_size = MMK__PAGE;
	h.meta_off = h.hdr_size;
	ck_rent *rt = calloc(nr, sizeof *rt);
	uint64_t total = 0;
	for (size_t r = 0; rt && r < nr; r++) {
		rt[r] = top->rt[r];
		rt[r].npages = rt[r].len / MMK__PAGE;
		rt[r].flags = CK_RENT_DENSE;
		rt[r].idx_off = 0;
		rt[r].crc_off = h.meta_off + 4 * total;
		total += rt[r].npages;
	}
	h.npages = total;
	h.meta_len = 4 * total;
	h.data_off = MMK__PAGE_UP(h.meta_off + h.meta_len);
	h.file_len = h.data_off + total * MMK__PAGE + sizeof(ck_trailer);
	uint32_t *meta = malloc(h.meta_len ? h.meta_len : 1);
	char *buf = malloc(CK_CBUF);
	int fd = -1;
	if (!rt || !meta || !buf) {
		rc = -ENOMEM;
		goto out;
	}
	mmk__ck_name(tmp, sizeof tmp, dir, h.generation, true);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		goto out;
	}
	if (fallocate(fd, 0, 0, (off_t)h.file_len) < 0 && errno != EOPNOTSUPP) {
		rc = -errno;
		goto out;
	}
	uint64_t done = 0;
	for (size_t r = 0; !rc && r < nr; r++) {
		size_t np = rt[r].npages;
		rt[r].data_off = h.data_off + done * MMK__PAGE;
		/* owner of each page: the newest image holding it */
		uint16_t *oi = malloc(np * sizeof *oi);
		uint32_t *ok = malloc(np * sizeof *ok);
		if (!oi || !ok || n > UINT16_MAX)
			rc = -ENOMEM;
		for (size_t k = n; !rc && k-- > 0;)
			for (size_t j = 0; j < ch[k].rt[r].npages; j++) {
				uint32_t p = ck_page_of(&ch[k], r, j);
				oi[p] = (uint16_t)k;
				ok[p] = (uint32_t)j;
			}
		for (size_t p = 0; !rc && p < np;) {
			size_t q = p + 1;
			while (q < np && oi[q] == oi[p] && ok[q] == ok[p] + (q - p) &&
			       (q - p) * MMK__PAGE < CK_CBUF)
				q++;
			const ck_img *src = &ch[oi[p]];
			const uint32_t *crc = ck_crc(src, r);
			rc = mmk__ck_pread(src->fd, buf, (q - p) * MMK__PAGE,
					   src->rt[r].data_off + (uint64_t)ok[p] * MMK__PAGE);
			for (size_t t = p; !rc && t < q; t++) {
				uint32_t c = crc[ok[t]];
				if (mmk__ck_crc32c(0, buf + (t - p) * MMK__PAGE, MMK__PAGE) != c)
					rc = MMK_ECORRUPT;
				meta[done + t] = c;
			}
			if (!rc)
				rc = mmk__ck_pwrite(fd, buf, (q - p) * MMK__PAGE,
						    rt[r].data_off + p * MMK__PAGE);
			p = q;
		}
		free(oi);
		free(ok);
		done += np;
	}
	if (!rc)
		rc = mmk__ck_finish(fd, &h, rt, meta, tmp, image, dir, NULL);
out:
	if (fd >= 0)
		close(fd);
	if (rc < 0 && fd >= 0)
		(void)unlink(tmp);
	if (!rc && (flags & MMK_CKPT_PRUNE)) {
		uint64_t *g;
		size_t ng;
		if (mmk__ck_list(dir, &g, &ng) == 0) {
			for (size_t i = 0; i < ng; i++)
				if (g[i] < h.generation) {
					char p[PATH_MAX + 64];
					mmk__ck_name(p, sizeof p, dir, g[i], false);
					(void)unlink(p);
				}
			free(g);
			(void)mmk__ck_fsync_dir(dir);
		}
	}
	free(rt);
	free(meta);
	free(buf);
	mmk__ck_chain_close(ch, n);
	return rc < 0 ? rc : (int)n;
}
