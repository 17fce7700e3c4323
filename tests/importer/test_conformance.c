/* Imports every model of the ONNX backend conformance data (Debian libonnx-testdata): each must
 * either import and verify, or be refused with an "unsupported" message. Never a crash or a hang
 * (run under sanitizers by the README's test command). Prints the counts. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "importer/importer.h"
#include "tests/check.h"

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv) {
  const char *root = getenv("SWATC_TESTDATA");
  if (argc > 1) root = argv[1];
  if (!root) root = "/usr/share/libonnx-testdata/data";
  static const char *const sets[] = {"node", "simple", "pytorch-converted", "pytorch-operator"};
  sw_quiet = 1;
  int total_ok = 0, total_unsup = 0, total_bad = 0;
  for (size_t s = 0; s < sizeof sets / sizeof *sets; s++) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", root, sets[s]);
    DIR *d = opendir(dir);
    CHECK(d != NULL, "cannot open %s (install libonnx-testdata)", dir);
    if (!d) continue;
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
      if (de->d_name[0] == '.') continue;
      names = realloc(names, (n + 1) * sizeof *names);
      names[n++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp);
    int ok = 0, unsup = 0, bad = 0;
    for (size_t i = 0; i < n; i++) {
      char path[8192];
      snprintf(path, sizeof path, "%s/%s/model.onnx", dir, names[i]);
      FILE *probe = fopen(path, "rb");
      if (!probe) continue;
      fclose(probe);
      ir_graph *g = NULL;
      sw_err e = {0};
      int rc = importer_load(path, NULL, &g, &e);
      if (rc == SW_OK) {
        sw_err ve = {0};
        CHECK(ir_verify(g, &ve) == SW_OK, "%s/%s: verify after import: %s", sets[s], names[i], ve.msg);
        FILE *null = fopen("/dev/null", "w");
        ir_print(g, null);
        fclose(null);
        ir_graph_free(g);
        ok++;
      } else if (strcasestr(e.msg, "unsupported")) {
        unsup++;
        if (getenv("VERBOSE")) printf("  unsupported %s/%s: %s\n", sets[s], names[i], e.msg);
      } else {
        bad++;
        CHECK(0, "%s/%s: refused without saying 'unsupported': %s", sets[s], names[i], e.msg);
      }
      free(names[i]);
    }
    free(names);
    printf("%-18s %4d imported, %4d refused as unsupported, %4d wrongly refused\n", sets[s], ok, unsup, bad);
    total_ok += ok;
    total_unsup += unsup;
    total_bad += bad;
  }
  printf("%-18s %4d imported, %4d refused as unsupported, %4d wrongly refused\n", "all", total_ok, total_unsup, total_bad);
  CHECK(total_ok >= 250, "only %d conformance models imported (was 256)", total_ok);
  return check_report("test_conformance");
}
