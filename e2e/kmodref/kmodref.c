/*
 * kmodref: libkmod as the reference for modautoload's resolver tests and
 * benchmarks. One process answers many lookups, so a differential test can
 * cover every alias of a kernel without a modprobe exec per input.
 *
 *   kmodref show  MODDIR [CONFIG...] < aliases
 *       for each input line: "== ALIAS" then exactly what
 *       modprobe --show-depends ALIAS prints on stdout, or "NOTFOUND".
 *   kmodref bench MODDIR ROUNDS [CONFIG...] < aliases
 *       times ROUNDS passes of kmod_module_new_from_lookup plus
 *       kmod_module_get_dependencies over the inputs; prints
 *       "lookups N seconds S".
 *
 * With no CONFIG the standard modprobe.d directories are read; otherwise
 * each CONFIG is a file or directory, as modprobe -C.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <libkmod.h>

static void print_action(struct kmod_module *m, bool install, const char *options)
{
	const char *path;

	if (install) {
		printf("install %s %s\n", kmod_module_get_install_commands(m), options);
		return;
	}
	path = kmod_module_get_path(m);
	if (path != NULL)
		printf("insmod %s %s\n", path, options);
	else if (kmod_module_get_initstate(m) == KMOD_MODULE_BUILTIN)
		printf("builtin %s\n", kmod_module_get_name(m));
}

static void show(struct kmod_ctx *ctx, const char *alias)
{
	struct kmod_list *list = NULL, *l;
	int flags = KMOD_PROBE_DRY_RUN | KMOD_PROBE_IGNORE_LOADED | KMOD_PROBE_APPLY_BLACKLIST_ALIAS_ONLY;

	printf("== %s\n", alias);
	if (kmod_module_new_from_lookup(ctx, alias, &list) < 0 || list == NULL) {
		printf("NOTFOUND\n");
		return;
	}
	kmod_list_foreach(l, list) {
		struct kmod_module *mod = kmod_module_get_module(l);
		kmod_module_probe_insert_module(mod, flags, NULL, NULL, NULL, print_action);
		kmod_module_unref(mod);
	}
	kmod_module_unref_list(list);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char *argv[])
{
	const char **config = NULL;
	struct kmod_ctx *ctx;
	char **inputs = NULL;
	size_t n = 0, cap = 0;
	char line[8192];
	int bench, rounds = 1, first_config;

	if (argc < 3 || (strcmp(argv[1], "show") && strcmp(argv[1], "bench"))) {
		fprintf(stderr, "usage: kmodref show MODDIR [CONFIG...] | bench MODDIR ROUNDS [CONFIG...]\n");
		return 2;
	}
	bench = strcmp(argv[1], "bench") == 0;
	first_config = 3;
	if (bench) {
		if (argc < 4)
			return 2;
		rounds = atoi(argv[3]);
		first_config = 4;
	}
	if (argc > first_config) {
		config = calloc(argc - first_config + 1, sizeof(*config));
		for (int i = first_config; i < argc; i++)
			config[i - first_config] = argv[i];
	}
	ctx = kmod_new(argv[2], config);
	if (ctx == NULL || kmod_load_resources(ctx) < 0) {
		fprintf(stderr, "kmodref: cannot open %s\n", argv[2]);
		return 1;
	}
	while (fgets(line, sizeof(line), stdin)) {
		line[strcspn(line, "\n")] = '\0';
		if (n == cap) {
			cap = cap ? 2 * cap : 1024;
			inputs = realloc(inputs, cap * sizeof(*inputs));
		}
		inputs[n++] = strdup(line);
	}
	if (!bench) {
		for (size_t i = 0; i < n; i++)
			show(ctx, inputs[i]);
		return 0;
	}

	double start = now();
	long lookups = 0;
	for (int r = 0; r < rounds; r++) {
		for (size_t i = 0; i < n; i++) {
			struct kmod_list *list = NULL, *l;
			kmod_module_new_from_lookup(ctx, inputs[i], &list);
			kmod_list_foreach(l, list) {
				struct kmod_module *mod = kmod_module_get_module(l);
				struct kmod_list *deps = kmod_module_get_dependencies(mod);
				kmod_module_unref_list(deps);
				kmod_module_unref(mod);
			}
			kmod_module_unref_list(list);
			lookups++;
		}
	}
	printf("lookups %ld seconds %.6f\n", lookups, now() - start);
	return 0;
}
