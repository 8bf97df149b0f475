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

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const uint32_t crc_tab[256] = {
	0x00000000, 0xf26b8303, 0xe13b70f7, 0x1350f3f4, 0xc79a971f, 0x35f1141c,
	0x26a1e7e8, 0xd4ca64eb, 0x8ad958cf, 0x78b2dbcc, 0x6be22838, 0x9989ab3b,
	0x4d43cfd0, 0xbf284cd3, 0xac78bf27, 0x5e133c24, 0x105ec76f, 0xe235446c,
	0xf165b798, 0x030e349b, 0xd7c45070, 0x25afd373, 0x36ff2087, 0xc494a384,
	0x9a879fa0, 0x68ec1ca3, 0x7bbcef57, 0x89d76c54, 0x5d1d08bf, 0xaf768bbc,
	0xbc267848, 0x4e4dfb4b, 0x20bd8ede, 0xd2d60ddd, 0xc186fe29, 0x33ed7d2a,
	0xe72719c1, 0x154c9ac2, 0x061c6936, 0xf477ea35, 0xaa64d611, 0x580f5512,
	0x4b5fa6e6, 0xb93425e5, 0x6dfe410e, 0x9f95c20d, 0x8cc531f9, 0x7eaeb2fa,
	0x30e349b1, 0xc288cab2, 0xd1d83946, 0x23b3ba45, 0xf779deae, 0x05125dad,
	0x1642ae59, 0xe4292d5a, 0xba3a117e, 0x4851927d, 0x5b016189, 0xa96ae28a,
	0x7da08661, 0x8fcb0562, 0x9c9bf696, 0x6ef07595, 0x417b1dbc, 0xb3109ebf,
	0xa0406d4b, 0x522bee48, 0x86e18aa3, 0x748a09a0, 0x67dafa54, 0x95b17957,
	0xcba24573, 0x39c9c670, 0x2a993584, 0xd8f2b687, 0x0c38d26c, 0xfe53516f,
	0xed03a29b, 0x1f682198, 0x5125dad3, 0xa34e59d0, 0xb01eaa24, 0x42752927,
	0x96bf4dcc, 0x64d4cecf, 0x77843d3b, 0x85efbe38, 0xdbfc821c, 0x2997011f,
	0x3ac7f2eb, 0xc8ac71e8, 0x1c661503, 0xee0d9600, 0xfd5d65f4, 0x0f36e6f7,
	0x61c69362, 0x93ad1061, 0x80fde395, 0x72966096, 0xa65c047d, 0x5437877e,
	0x4767748a, 0xb50cf789, 0xeb1fcbad, 0x197448ae, 0x0a24bb5a, 0xf84f3859,
	0x2c855cb2, 0xdeeedfb1, 0xcdbe2c45, 0x3fd5af46, 0x7198540d, 0x83f3d70e,
	0x90a324fa, 0x62c8a7f9, 0xb602c312, 0x44694011, 0x5739b3e5, 0xa55230e6,
	0xfb410cc2, 0x092a8fc1, 0x1a7a7c35, 0xe811ff36, 0x3cdb9bdd, 0xceb018de,
	0xdde0eb2a, 0x2f8b6829, 0x82f63b78, 0x709db87b, 0x63cd4b8f, 0x91a6c88c,
	0x456cac67, 0xb7072f64, 0xa457dc90, 0x563c5f93, 0x082f63b7, 0xfa44e0b4,
	0xe9141340, 0x1b7f9043, 0xcfb5f4a8, 0x3dde77ab, 0x2e8e845f, 0xdce5075c,
	0x92a8fc17, 0x60c37f14, 0x73938ce0, 0x81f80fe3, 0x55326b08, 0xa759e80b,
	0xb4091bff, 0x466298fc, 0x1871a4d8, 0xea1a27db, 0xf94ad42f, 0x0b21572c,
	0xdfeb33c7, 0x2d80b0c4, 0x3ed04330, 0xccbbc033, 0xa24bb5a6, 0x502036a5,
	0x4370c551, 0xb11b4652, 0x65d122b9, 0x97baa1ba, 0x84ea524e, 0x7681d14d,
	0x2892ed69, 0xdaf96e6a, 0xc9a99d9e, 0x3bc21e9d, 0xef087a76, 0x1d63f975,
	0x0e330a81, 0xfc588982, 0xb21572c9, 0x407ef1ca, 0x532e023e, 0xa145813d,
	0x758fe5d6, 0x87e466d5, 0x94b49521, 0x66df1622, 0x38cc2a06, 0xcaa7a905,
	0xd9f75af1, 0x2b9cd9f2, 0xff56bd19, 0x0d3d3e1a, 0x1e6dcdee, 0xec064eed,
	0xc38d26c4, 0x31e6a5c7, 0x22b65633, 0xd0ddd530, 0x0417b1db, 0xf67c32d8,
	0xe52cc12c, 0x1747422f, 0x49547e0b, 0xbb3ffd08, 0xa86f0efc, 0x5a048dff,
	0x8ecee914, 0x7ca56a17, 0x6ff599e3, 0x9d9e1ae0, 0xd3d3e1ab, 0x21b862a8,
	0x32e8915c, 0xc083125f, 0x144976b4, 0xe622f5b7, 0xf5720643, 0x07198540,
	0x590ab964, 0xab613a67, 0xb831c993, 0x4a5a4a90, 0x9e902e7b, 0x6cfbad78,
	0x7fab5e8c, 0x8dc0dd8f, 0xe330a81a, 0x115b2b19, 0x020bd8ed, 0xf0605bee,
	0x24aa3f05, 0xd6c1bc06, 0xc5914ff2, 0x37faccf1, 0x69e9f0d5, 0x9b8273d6,
	0x88d28022, 0x7ab90321, 0xae7367ca, 0x5c18e4c9, 0x4f48173d, 0xbd23943e,
	0xf36e6f75, 0x0105ec76, 0x12551f82, 0xe03e9c81, 0x34f4f86a, 0xc69f7b69,
	0xd5cf889d, 0x27a40b9e, 0x79b737ba, 0x8bdcb4b9, 0x988c474d, 0x6ae7c44e,
	0xbe2da0a5, 0x4c4623a6, 0x5f16d052, 0xad7d5351,
};

static uint32_t crc_sw(uint32_t c, const unsigned char *p, size_t n)
{
	while (n--)
		c = crc_tab[(c ^ *p++) & 0xff] ^ (c >> 8);
	return c;
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t c, const unsigned char *p, size_t n)
{
	uint64_t c64 = c;
	while (n && ((uintptr_t)p & 7)) {
		c64 = __builtin_ia32_crc32qi((uint32_t)c64, *p++);
		n--;
	}
	/* three independent streams would be faster; one is ~8 GB/s, far
	 * above the disk */
	while (n >= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c64 = __builtin_ia32_crc32di(c64, v);
		p += 8;
		n -= 8;
	}
	while (n--)
		c64 = __builtin_ia32_crc32qi((uint32_t)c64, *p++);
	return (uint32_t)c64;
}
#endif

uint32_t mmk__ck_crc32c(uint32_t crc, const void *p, size_t n)
{
	uint32_t c = ~crc;
#if defined(__x86_64__) && defined(__GNUC__)
	if (__builtin_cpu_supports("sse4.2"))
		return ~crc_hw(c, p, n);
#endif
	return ~crc_sw(c, p, n);
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
	const char *c = p;
	while (n) {
		ssize_t w = pwrite(fd, c, n, (off_t)off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (w == 0)
			return -EIO;
		c += w;
		n -= (size_t)w;
		off += (uint64_t)w;
	}
	return 0;
}

int mmk__ck_pread(int fd, void *p, size_t n, uint64_t off)
{
	char *c = p;
	while (n) {
		ssize_t r = pread(fd, c, n, (off_t)off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return MMK_ECORRUPT; /* shorter than its header says */
		c += r;
		n -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
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
		   const char *final, const char *dir)
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
	int rc = mmk__ck_pwrite(fd, meta, h->meta_len, h->meta_off);
	if (!rc)
		rc = mmk__ck_pwrite(fd, &t, sizeof t, h->file_len - sizeof t);
	if (!rc)
		rc = mmk__ck_pwrite(fd, hblock, h->hdr_size, 0);
	free(hblock);
	if (!rc && fdatasync(fd) < 0)
		rc = -errno;
	if (!rc && rename(tmp, final) < 0)
		rc = -errno;
	if (!rc)
		rc = mmk__ck_fsync_dir(dir);
	return rc;
}
