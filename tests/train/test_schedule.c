/* LR schedules at known points: constant, step (the SWAT CIFAR schedule), cosine per epoch and per
 * iteration, linear warm-up, and parsing. */
#include "train/schedule.h"

#include "tests/train/check.h"

static void test_step(void) {
  /* SWAT reference: 0.1, divided by 10 at epochs 50 and 100; CIFAR-10 at batch 128 = 391 steps. */
  sw_sched s = {.kind = SW_SCHED_STEP, .base_lr = 0.1, .n_milestones = 2, .milestones = {50, 100}};
  sw_err e = {0};
  CHECK(sw_sched_check(&s, &e) == SW_OK);
  const int64_t spe = 391;
  CHECK_NEAR(sw_sched_lr_at(&s, 0, spe), 0.1, 1e-12);
  CHECK_NEAR(sw_sched_lr_at(&s, 50 * spe - 1, spe), 0.1, 1e-12);
  CHECK_NEAR(sw_sched_lr_at(&s, 50 * spe, spe), 0.01, 1e-12);
  CHECK_NEAR(sw_sched_lr_at(&s, 100 * spe - 1, spe), 0.01, 1e-12);
  CHECK_NEAR(sw_sched_lr_at(&s, 100 * spe, spe), 0.001, 1e-12);
  CHECK_NEAR(sw_sched_lr_at(&s, 150 * spe - 1, spe), 0.001, 1e-12);
  s.gamma = 0.2;
  CHECK_NEAR(sw_sched_lr_at(&s, 100 * spe, spe), 0.004, 1e-12);
  sw_sched c = {.kind = SW_SCHED_CONSTANT, .base_lr = 0.05};
  CHECK(sw_sched_check(&c, &e) == SW_OK);
  CHECK(sw_sched_lr_at(&c, 0, 10) == 0.05 && sw_sched_lr_at(&c, 123456, 10) == 0.05);
}

static void test_cosine(void) {
  sw_err e = {0};
  /* Per epoch, 10 epochs: lr(e) = 0.1 (1 + cos(pi e / 10)) / 2, constant within an epoch. */
  sw_sched s = {.kind = SW_SCHED_COSINE, .base_lr = 0.1, .epochs = 10};
  CHECK(sw_sched_check(&s, &e) == SW_OK);
  CHECK_NEAR(sw_sched_lr_at(&s, 0, 100), 0.1, 1e-12);
  CHECK_NEAR(sw_sched_lr_at(&s, 99, 100), 0.1, 1e-12);
  CHECK_NEAR(sw_sched_lr_at(&s, 500, 100), 0.05, 1e-12);
  CHECK_NEAR(sw_sched_lr_at(&s, 900, 100), 0.1 * (1 - 0.9510565162951535) / 2, 1e-12); /* 0.0024471742 */
  CHECK_NEAR(sw_sched_lr_at(&s, 1000, 100), 0.0, 1e-12);
  CHECK_NEAR(sw_sched_lr_at(&s, 5000, 100), 0.0, 1e-12); /* stays at the minimum */
  /* Per iteration: step T/2 is half way, step T/4 is (1 + cos(pi/4))/2. */
  s.per_iter = 1;
  CHECK_NEAR(sw_sched_lr_at(&s, 500, 100), 0.05, 1e-12);
  CHECK_NEAR(sw_sched_lr_at(&s, 250, 100), 0.1 * (1 + 0.7071067811865476) / 2, 1e-12);
  CHECK_NEAR(sw_sched_lr_at(&s, 1, 100), 0.1 * (1 + cos(M_PI / 1000)) / 2, 1e-12);
  /* Minimum rate. */
  s.min_lr = 0.01;
  CHECK_NEAR(sw_sched_lr_at(&s, 500, 100), 0.055, 1e-12);
  CHECK_NEAR(sw_sched_lr_at(&s, 1000, 100), 0.01, 1e-12);
}

static void test_warmup(void) {
  sw_err e = {0};
  /* Constant 0.4 with 2 warm-up epochs of 10 steps: 0.4 (step + 1) / 20. */
  sw_sched s = {.kind = SW_SCHED_CONSTANT, .base_lr = 0.4, .warmup_epochs = 2};
  CHECK(sw_sched_check(&s, &e) == SW_OK);
  CHECK_NEAR(sw_sched_lr_at(&s, 0, 10), 0.02, 1e-12);
  CHECK_NEAR(sw_sched_lr_at(&s, 9, 10), 0.2, 1e-12);
  CHECK_NEAR(sw_sched_lr_at(&s, 19, 10), 0.4, 1e-12);
  CHECK_NEAR(sw_sched_lr_at(&s, 20, 10), 0.4, 1e-12);
  /* Cosine after warm-up: anneals over epochs 2..12. */
  s = (sw_sched){.kind = SW_SCHED_COSINE, .base_lr = 0.4, .epochs = 12, .warmup_epochs = 2};
  CHECK(sw_sched_check(&s, &e) == SW_OK);
  CHECK_NEAR(sw_sched_lr_at(&s, 4, 10), 0.1, 1e-12);
  CHECK_NEAR(sw_sched_lr_at(&s, 20, 10), 0.4, 1e-12);
  CHECK_NEAR(sw_sched_lr_at(&s, 70, 10), 0.2, 1e-12);
  CHECK_NEAR(sw_sched_lr_at(&s, 120, 10), 0.0, 1e-12);
  s.per_iter = 1;
  CHECK_NEAR(sw_sched_lr_at(&s, 70, 10), 0.2, 1e-12);
  CHECK_NEAR(sw_sched_lr_at(&s, 19, 10), 0.4, 1e-12);
  /* Step with warm-up: milestones are absolute epochs. */
  s = (sw_sched){
      .kind = SW_SCHED_STEP, .base_lr = 0.1, .warmup_epochs = 1, .n_milestones = 1, .milestones = {3}};
  CHECK_NEAR(sw_sched_lr_at(&s, 0, 4), 0.025, 1e-12);
  CHECK_NEAR(sw_sched_lr_at(&s, 4, 4), 0.1, 1e-12);
  CHECK_NEAR(sw_sched_lr_at(&s, 12, 4), 0.01, 1e-12);
}

static void test_parse_check(void) {
  sw_err e = {0};
  sw_sched s = {.base_lr = 0.1};
  CHECK(sw_sched_parse(&s, "step:50,100", &e) == SW_OK);
  CHECK(s.kind == SW_SCHED_STEP && s.n_milestones == 2 && s.milestones[0] == 50 && s.milestones[1] == 100);
  CHECK(s.gamma == 0.1);
  CHECK(sw_sched_parse(&s, "step:30,60,90:0.2", &e) == SW_OK);
  CHECK(s.n_milestones == 3 && s.milestones[2] == 90 && s.gamma == 0.2);
  CHECK_NEAR(sw_sched_lr_at(&s, 95, 1), 0.1 * 0.2 * 0.2 * 0.2, 1e-12);
  CHECK(sw_sched_parse(&s, "cosine", &e) == SW_OK && s.kind == SW_SCHED_COSINE && !s.per_iter);
  CHECK(sw_sched_parse(&s, "cosine-iter", &e) == SW_OK && s.per_iter);
  CHECK(sw_sched_parse(&s, "constant", &e) == SW_OK && s.kind == SW_SCHED_CONSTANT);
  const char *bad[] = {"linear",    "step:50,x", "step:100,50", "step:50:0",
                       "step:50:2", "step:",     "steps",       "step:5,"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    sw_err_clear(&e);
    int rc = sw_sched_parse(&s, bad[i], &e);
    if (rc != SW_EUSAGE) fprintf(stderr, "parse accepted '%s'\n", bad[i]);
    CHECK(rc == SW_EUSAGE && e.msg[0]);
  }
  sw_err_clear(&e);
  sw_sched c = {.kind = SW_SCHED_COSINE, .base_lr = 0.1, .epochs = 5, .warmup_epochs = 5};
  CHECK(sw_sched_check(&c, &e) == SW_EUSAGE);
  CHECK_CONTAINS(e.msg, "leaves nothing");
  sw_err_clear(&e);
  c = (sw_sched){.kind = SW_SCHED_CONSTANT, .base_lr = 0};
  CHECK(sw_sched_check(&c, &e) == SW_EUSAGE);
  sw_err_clear(&e);
  c = (sw_sched){.kind = SW_SCHED_STEP, .base_lr = 0.1, .n_milestones = 2, .milestones = {10, 10}};
  CHECK(sw_sched_check(&c, &e) == SW_EUSAGE);
}

int main(void) {
  test_step();
  test_cosine();
  test_warmup();
  test_parse_check();
  return check_report("test_schedule");
}
