/*
 * tools/mmkit/cmd_features.c - `mmkit features [--json]`.
 */
#include "cmd.h"

#include <mmkit.h>
#include <string.h>

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

int mmk_cmd_features(int argc, char **argv)
{
	bool json = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = true;
		else {
			fprintf(stderr, "usage: mmkit features [--json]\n");
			return 2;
		}
	}
	mmk_feature_line l;
	if (json) {
		const mmk_features *f = mmk_features_get();
		printf("{\n  \"kernel\": ");
		json_str(f->kernel_release);
		printf(",\n  \"uffd_features\": %llu,\n  \"features\": [\n",
		       (unsigned long long)f->uffd_features);
		for (size_t i = 1; mmk_features_line(i, &l); i++) {
			printf("%s    {\"name\": ", i > 1 ? ",\n" : "");
			json_str(l.name);
			printf(", \"present\": %s, \"value\": ", l.present ? "true" : "false");
			json_str(l.value);
			printf(", \"enables\": ");
			json_str(l.enables);
			printf(", \"fallback\": ");
			json_str(l.present ? "" : l.fallback);
			printf("}");
		}
		printf("\n  ]\n}\n");
		return 0;
	}
	for (size_t i = 0; mmk_features_line(i, &l); i++) {
		if (i == 0) {
			printf("kernel               %s\n", l.value);
			continue;
		}
		printf("%-20s %-4s %-16s %s\n", l.name, l.present ? "yes" : "no", l.value,
		       l.present ? l.enables : "");
		if (!l.present)
			printf("%-20s %-4s %-16s fallback: %s\n", "", "", "", l.fallback);
	}
	return 0;
}
