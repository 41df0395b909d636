// Tests of oq/cpu/parallel.hpp and oq/cpu/isa.hpp: ranges cover the work
// exactly once in whole grains, exceptions reach the caller, and the
// instruction-set queries agree with each other.
#include <oq/cpu/isa.hpp>
#include <oq/cpu/parallel.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

TEST_CASE("parallel_for covers [0, count) once, in whole grains but the last") {
  for (std::int64_t count : {1, 5, 64, 1000, 1001}) {
    for (int threads : {1, 2, 3, 16}) {
      for (std::int64_t grain : {1, 4, 7}) {
        std::vector<std::atomic<int>> hits(static_cast<std::size_t>(count));
        std::atomic<int> misaligned{0};
        oq::cpu::parallel_for(count, threads, grain, [&](std::int64_t b, std::int64_t e) {
          if (b % grain != 0 || (e != count && e % grain != 0) || b >= e) ++misaligned;
          for (std::int64_t i = b; i < e; ++i) ++hits[static_cast<std::size_t>(i)];
        });
        CAPTURE(count);
        CAPTURE(threads);
        CAPTURE(grain);
        CHECK(misaligned == 0);
        int wrong = 0;
        for (auto& h : hits) wrong += h != 1;
        CHECK(wrong == 0);
      }
    }
  }
  int calls = 0;
  oq::cpu::parallel_for(0, 4, 1, [&](std::int64_t, std::int64_t) { ++calls; });
  CHECK(calls == 0);
}

TEST_CASE("an exception in any range reaches the caller after every thread joined") {
  std::atomic<int> finished{0};
  CHECK_THROWS_WITH_AS(oq::cpu::parallel_for(100, 4, 1,
                                             [&](std::int64_t b, std::int64_t) {
                                               if (b >= 50) throw std::runtime_error("range failed");
                                               ++finished;
                                             }),
                       "range failed", std::runtime_error);
  CHECK(finished == 2);
}

TEST_CASE("threads: 0 is the hardware's, negative is refused") {
  CHECK(oq::cpu::resolve_threads(3, "t") == 3);
  CHECK(oq::cpu::resolve_threads(0, "t") >= 1);
  CHECK_THROWS_WITH_AS(oq::cpu::resolve_threads(-2, "t"), doctest::Contains("options.threads must be >= 0"),
                       std::invalid_argument);
}

TEST_CASE("instruction sets: the best is supported, kAuto resolves to it, scalar always runs") {
  using oq::cpu::Isa;
  CHECK(oq::cpu::isa_supported(Isa::kScalar));
  CHECK(oq::cpu::isa_supported(oq::cpu::best_isa()));
  CHECK(oq::cpu::resolve_isa(Isa::kAuto, "t") == oq::cpu::best_isa());
  CHECK(oq::cpu::resolve_isa(Isa::kScalar, "t") == Isa::kScalar);
  // VNNI implies AVX2 on every CPU that has it: best_isa never skips a level.
  if (oq::cpu::isa_supported(Isa::kAvx512Vnni)) CHECK(oq::cpu::isa_supported(Isa::kAvx2));
  MESSAGE("this CPU's best path: ", oq::cpu::to_string(oq::cpu::best_isa()));
}

TEST_CASE("a caller-owned pool: every task once, many jobs in a row, exceptions, two callers taking turns") {
  oq::cpu::ThreadPool pool(3);
  CHECK(pool.size() == 3);
  for (int job = 0; job < 200; ++job) {
    const std::int64_t tasks = job % 7;
    std::vector<std::atomic<int>> hits(static_cast<std::size_t>(tasks));
    pool.run(tasks, [&](std::int64_t i) { ++hits[static_cast<std::size_t>(i)]; });
    int wrong = 0;
    for (auto& h : hits) wrong += h != 1;
    REQUIRE(wrong == 0);
  }
  CHECK_THROWS_WITH_AS(pool.run(5,
                                [](std::int64_t i) {
                                  if (i == 1 || i == 3) throw std::runtime_error("task " + std::to_string(i));
                                }),
                       "task 1", std::runtime_error);
  // parallel_for on the pool: the same coverage as with its own threads.
  std::vector<std::atomic<int>> hits(1001);
  oq::cpu::parallel_for(
      1001, 0, 7, [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t i = b; i < e; ++i) ++hits[static_cast<std::size_t>(i)];
      },
      &pool);
  int wrong = 0;
  for (auto& h : hits) wrong += h != 1;
  CHECK(wrong == 0);
  // Two threads sharing the pool take turns.
  std::atomic<long> total{0};
  auto caller = [&] {
    for (int job = 0; job < 100; ++job) pool.run(4, [&](std::int64_t i) { total += i + 1; });
  };
  std::thread other(caller);
  caller();
  other.join();
  CHECK(total == 2 * 100 * 10);
  CHECK(oq::cpu::resolve_threads(0, "t", &pool) == 3);
  CHECK_THROWS_WITH_AS(oq::cpu::resolve_threads(2, "t", &pool), doctest::Contains("options.threads must be 0"),
                       std::invalid_argument);
  CHECK_THROWS_AS(oq::cpu::ThreadPool(-1), std::invalid_argument);
}
