// 03_small_transformer: a small byte-level LLaMA-style model trained here on
// real text, three ways (baseline; kurtosis regularization; kurtosis + QAT of
// the linear inputs), with the outlier statistics logged during training and
// every model evaluated W4A4 with each method afterwards. See README.md.
//
//   03_small_transformer --text kjv.txt                 train the three variants, evaluate, write CSVs
//   03_small_transformer --load out/baseline --text kjv.txt   evaluate a saved model again
//   03_small_transformer --help
#include "../common/parse_flag.hpp"
#include "checkpoint.hpp"
#include "evaluate.hpp"
#include "model.hpp"
#include "train.hpp"

#include <oq/analysis.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>
#include <unistd.h>
#include <string>
#include <string_view>
#include <vector>

namespace {

struct Variant {
  std::string name;
  small_lm::Regularization regularization;
};

struct Flags {
  std::optional<std::filesystem::path> text;
  std::optional<std::filesystem::path> load;
  std::filesystem::path out_dir = "small_transformer_out";
  small_lm::Config config;
  Eigen::Index batch = 16;
  int steps = 300;
  double learning_rate = 3e-3;
  double lambda = 1e-6;
  int qat_bits = 4;
  int log_every = 10;
  Eigen::Index eval_sequences = 128;
  Eigen::Index calibration_sequences = 16;
  Eigen::Index block_size = 64;
  std::vector<std::string> variants{"baseline", "kurtosis", "kurtosis+qat"};
  std::uint64_t seed = 0;
};

constexpr const char* kUsage = R"(usage: 03_small_transformer --text FILE [options]
  --text FILE        training text (bytes); the last 5% is held out for validation.
                     bash cmake/run.sh train writes the King James Bible of Debian's
                     bible-kjv to build/kjv.txt and passes it here
  --variants LIST    comma-separated, of baseline, kurtosis, kurtosis+qat (default: all three)
  --steps N          training steps per variant (default 300)
  --batch N          sequences per step (default 16)
  --seq-len N        context length (default 128)
  --hidden N         model width (default 128)
  --layers N         decoder blocks (default 4)
  --heads N          attention heads (default 4)
  --ffn N            SwiGLU width (default 384)
  --lr X             peak learning rate (default 3e-3)
  --lambda X         kurtosis regularizer weight λ, summed over tokens (default 1e-6; see README)
  --qat-bits N       bits of the learned-clip QAT of linear inputs (default 4)
  --log-every N      outlier statistics every N steps (default 10)
  --eval-seqs N      validation windows (default 128)
  --calib-seqs N     calibration windows for the W4A4 methods (default 16)
  --block N          DuQuant / Hadamard block size (default 64)
  --seed N           initialisation, batches and DuQuant's Q' (default 0)
  --load DIR         evaluate a model saved by an earlier run instead of training
  --out DIR          CSV files, figures' data and saved models (default ./small_transformer_out)
)";

Flags parse_flags(int argc, char** argv) {
  Flags f;
  auto value = [&](int& i) -> std::string {
    if (i + 1 >= argc) throw std::invalid_argument(std::string(argv[i]) + " needs a value");
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (arg == "--text") {
      f.text = value(i);
    } else if (arg == "--load") {
      f.load = value(i);
    } else if (arg == "--out") {
      f.out_dir = value(i);
    } else if (arg == "--variants") {
      f.variants.clear();
      std::stringstream list(value(i));
      for (std::string v; std::getline(list, v, ',');) {
        if (v != "baseline" && v != "kurtosis" && v != "kurtosis+qat") {
          throw std::invalid_argument("--variants: unknown variant '" + v + "' (baseline, kurtosis, kurtosis+qat)");
        }
        f.variants.push_back(v);
      }
      if (f.variants.empty()) throw std::invalid_argument("--variants needs at least one variant");
    } else if (arg == "--steps") {
      f.steps = static_cast<int>(examples::parse_count(arg, value(i)));
    } else if (arg == "--batch") {
      f.batch = examples::parse_count(arg, value(i));
    } else if (arg == "--seq-len") {
      f.config.seq_len = examples::parse_count(arg, value(i));
    } else if (arg == "--hidden") {
      f.config.hidden_size = examples::parse_count(arg, value(i));
    } else if (arg == "--layers") {
      f.config.num_layers = examples::parse_count(arg, value(i));
    } else if (arg == "--heads") {
      f.config.num_heads = examples::parse_count(arg, value(i));
    } else if (arg == "--ffn") {
      f.config.intermediate_size = examples::parse_count(arg, value(i));
    } else if (arg == "--lr") {
      f.learning_rate = examples::parse_number(arg, value(i));
    } else if (arg == "--lambda") {
      f.lambda = examples::parse_number(arg, value(i));
    } else if (arg == "--qat-bits") {
      f.qat_bits = static_cast<int>(examples::parse_count(arg, value(i)));
    } else if (arg == "--log-every") {
      f.log_every = static_cast<int>(examples::parse_count(arg, value(i)));
    } else if (arg == "--eval-seqs") {
      f.eval_sequences = examples::parse_count(arg, value(i));
    } else if (arg == "--calib-seqs") {
      f.calibration_sequences = examples::parse_count(arg, value(i));
    } else if (arg == "--block") {
      f.block_size = examples::parse_count(arg, value(i));
    } else if (arg == "--seed") {
      f.seed = static_cast<std::uint64_t>(examples::parse_count(arg, value(i)));
    } else {
      throw std::invalid_argument("unknown argument '" + arg + "' (see --help)");
    }
  }
  if (!f.text) throw std::invalid_argument("--text FILE is required (bash cmake/run.sh train provides the KJV Bible)");
  if (f.steps <= 0) throw std::invalid_argument("--steps must be > 0");
  if (f.batch <= 0) throw std::invalid_argument("--batch must be > 0");
  if (f.log_every <= 0) throw std::invalid_argument("--log-every must be > 0");
  if (f.eval_sequences <= 0 || f.calibration_sequences <= 0) {
    throw std::invalid_argument("--eval-seqs and --calib-seqs must be > 0");
  }
  if (f.qat_bits < 2 || f.qat_bits > 8) throw std::invalid_argument("--qat-bits must be in [2, 8]");
  f.config.validate();
  return f;
}

small_lm::Regularization regularization_of(const std::string& variant, const Flags& f) {
  small_lm::Regularization r;
  if (variant != "baseline") r.kurtosis_lambda = f.lambda;
  if (variant == "kurtosis+qat") r.qat_bits = f.qat_bits;
  return r;
}

// Progress on stderr: one rewritten line on a terminal, whole lines in a log.
void progress(const std::string& line, bool done = false) {
  static const bool tty = isatty(fileno(stderr)) != 0;
  if (tty) {
    std::cerr << "\r\033[K" << line << (done ? "\n" : "") << std::flush;
  } else {
    std::cerr << line << '\n';
  }
}

// One row per (step, layer, tensor) of the outlier statistics CSV.
void log_outliers(std::ostream& csv, const std::string& variant, int step,
                  const small_lm::Model<float>& model) {
  auto write = [&](std::size_t layer, std::string_view tensor, const small_lm::Matrix<float>& x) {
    const llama::InputStats s = llama::input_stats(x);
    csv << variant << ',' << step << ',' << layer << ',' << tensor << ',' << s.max_abs << ',' << s.mean_kurtosis
        << ',' << s.outlier_channels << '\n';
  };
  const auto& caches = model.caches();
  for (std::size_t l = 0; l < caches.size(); ++l) {
    for (llama::Input in : llama::kAllInputs) {
      write(l, llama::input_name(in), caches[l].inputs[static_cast<std::size_t>(in)]);
    }
    write(l, "residual", l + 1 < caches.size() ? caches[l + 1].x : model.final_hidden());
  }
}

small_lm::Parameters<float> train(const Flags& f, const small_lm::Corpus& corpus, const Variant& v,
                                  std::ostream& outliers_csv, std::ostream& loss_csv) {
  using Clock = std::chrono::steady_clock;
  small_lm::Model<float> model(f.config, v.regularization);
  small_lm::Parameters<float> params = small_lm::Parameters<float>::initial(f.config, f.seed);
  small_lm::Parameters<float> grad = small_lm::Parameters<float>::zeros(f.config);
  small_lm::OptimizerOptions o;
  o.learning_rate = f.learning_rate;
  o.total_steps = f.steps;
  o.warmup_steps = std::max(1, f.steps / 20);
  small_lm::AdamW<float> optimizer(f.config, o);
  std::mt19937_64 rng(f.seed + 1);  // the same batches for every variant
  const auto start = Clock::now();
  const double tokens_per_step = static_cast<double>(f.batch * f.config.seq_len);
  for (int step = 0; step < f.steps; ++step) {
    const small_lm::Batch batch = corpus.training_batch(f.batch, rng);
    if (step == 0 && v.regularization.qat_bits != 0) model.init_clips(params, batch);
    const small_lm::Loss loss = model.loss_and_gradient(params, batch, grad);
    if (step % f.log_every == 0 || step + 1 == f.steps) log_outliers(outliers_csv, v.name, step, model);
    const double norm = optimizer.step(params, grad, step);
    model.project_clips(params);  // the learned clips stay ordered (c− < c+)
    loss_csv << v.name << ',' << step << ',' << loss.cross_entropy << ',' << loss.kurtosis << ',' << norm << '\n';
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    std::ostringstream line;
    line << v.name << ": step " << step + 1 << "/" << f.steps << "  loss " << std::fixed << std::setprecision(3)
         << loss.cross_entropy;
    if (v.regularization.kurtosis_lambda > 0) line << " + kurtosis " << loss.kurtosis;
    line << "  " << std::setprecision(0) << tokens_per_step * (step + 1) / seconds << " tokens/s";
    progress(line.str(), step + 1 == f.steps);
  }
  return params;
}

struct Row {
  std::string variant;
  double full_precision;
  std::vector<double> methods;  // llama::kAllMethods order
  double train_seconds;
  std::optional<double> learned_clip;  // QAT-trained models: W4A4 with their own clips
  std::vector<double> integer;         // the same methods with oq::cpu's integer kernels
  std::vector<llama::PathAgreement> agreement;  // per method: integer kernels against fake quantization
};

Row evaluate(const Flags& f, const small_lm::Config& c, const small_lm::Corpus& corpus, const std::string& name,
             const small_lm::Parameters<float>& p, const small_lm::Regularization& r, double train_seconds) {
  const small_lm::Batch validation = corpus.validation_batch(f.eval_sequences);
  std::mt19937_64 rng(f.seed + 2);
  const small_lm::Batch calibration = corpus.training_batch(f.calibration_sequences, rng);
  Row row{name, small_lm::perplexity(c, p, validation), {}, train_seconds, std::nullopt, {}, {}};
  const auto inputs = small_lm::record_block_inputs(c, p, calibration);
  llama::QuantOptions q;
  q.block_size = f.block_size;
  q.seed = f.seed;
  for (llama::Method m : llama::kAllMethods) {
    progress(name + ": evaluating W4A4 " + std::string(llama::method_name(m)));
    const auto blocks = small_lm::quantize_model(c, p, inputs, m, q);
    row.methods.push_back(small_lm::quantized_perplexity(c, p, blocks, validation));
    progress(name + ": evaluating W4A4 " + std::string(llama::method_name(m)) + " with integer kernels");
    row.agreement.emplace_back();
    row.integer.push_back(small_lm::integer_perplexity(c, p, blocks, validation, &row.agreement.back()));
  }
  if (r.qat_bits != 0) {
    progress(name + ": evaluating W4A4 with the learned clips");
    row.learned_clip = small_lm::learned_clip_perplexity(c, p, r.qat_bits, q, validation);
  }
  progress(name + ": evaluated", true);
  return row;
}

void print_table(const std::vector<Row>& rows, double unigram, int qat_bits) {
  std::cout << "\nValidation perplexity (bytes; unigram model: " << std::fixed << std::setprecision(2) << unigram
            << "); W4A4 cells: fake quantization / integer kernels (oq/cpu.hpp, "
            << oq::cpu::to_string(oq::cpu::best_isa()) << ")\n\n| variant | full precision |";
  for (llama::Method m : llama::kAllMethods) std::cout << " W4A4 " << llama::method_name(m) << " |";
  std::cout << " W4A" << qat_bits << " learned clip (QAT) |\n|---|---|";
  for (std::size_t i = 0; i <= llama::kAllMethods.size(); ++i) std::cout << "---|";
  std::cout << '\n';
  for (const Row& r : rows) {
    std::cout << "| " << r.variant << " | " << r.full_precision << " |";
    for (std::size_t i = 0; i < r.methods.size(); ++i) std::cout << ' ' << r.methods[i] << " / " << r.integer[i] << " |";
    if (r.learned_clip) {
      std::cout << ' ' << *r.learned_clip << " / – |\n";
    } else {
      std::cout << " – |\n";
    }
  }
  std::cout << "\nlearned clip: no integer-kernel figure. Its quantizer has one fixed range [c-, c+] per tensor, and\n"
               "c- is not an integer number of steps; cpu::quantize_per_token takes each token's own range, and\n"
               "PackedActivations holds integer zero points (an engine would need z = 0 plus a per-channel bias\n"
               "c- * sum_k w^_k, which oq::cpu's epilogue does not have).\n";
  std::cout << "\ninteger kernels against fake quantization, every output of every linear of every block, on the same\n"
               "input (tools/llama/integer_path.hpp: y_int - y_fake = (E_int - E_fake) + r with\n"
               "|r| <= g_3*|E_int| + g_(K+2)*A; both ratios must stay <= 1):\n";
  std::cout << "method             max |r|/bound  epilogue/bound  differing codes (rows whose s_a or z_a differ)\n";
  for (std::size_t i = 0; i < llama::kAllMethods.size(); ++i) {
    llama::PathAgreement all;
    for (const Row& r : rows) all.merge(r.agreement[i]);
    const std::string name(llama::method_name(llama::kAllMethods[i]));
    std::cout << name << std::string(18 - name.size(), ' ') << std::scientific << std::setprecision(2)
              << std::setw(14) << all.max_bound_ratio << std::setw(16) << all.max_epilogue_ratio << "  "
              << all.differing_codes << " of " << all.codes << " (" << all.differing_rows << " of " << all.rows
              << ")\n";
  }
  std::cout << std::fixed << std::setprecision(2);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Flags f = parse_flags(argc, argv);
    std::filesystem::create_directories(f.out_dir);
    std::vector<Row> rows;
    if (f.load) {
      small_lm::LoadedModel m = small_lm::load_model(*f.load);
      const small_lm::Corpus corpus = small_lm::Corpus::from_file(*f.text, 0.05, m.config.seq_len);
      rows.push_back(evaluate(f, m.config, corpus, f.load->filename().string(), m.parameters, m.regularization, 0.0));
      print_table(rows, corpus.unigram_perplexity(corpus.validation_batch(f.eval_sequences)),
                  m.regularization.qat_bits);
      return 0;
    }
    const small_lm::Corpus corpus = small_lm::Corpus::from_file(*f.text, 0.05, f.config.seq_len);
    std::cerr << "text: " << corpus.size() << " bytes (" << corpus.training_bytes() << " training, "
              << corpus.validation_bytes() << " validation)\n";
    std::ofstream outliers_csv(f.out_dir / "outliers.csv");
    outliers_csv << "variant,step,layer,tensor,max_abs,mean_kurtosis,outlier_channels\n";
    std::ofstream loss_csv(f.out_dir / "loss.csv");
    loss_csv << "variant,step,cross_entropy,kurtosis_term,grad_norm\n";
    for (const std::string& name : f.variants) {
      const Variant v{name, regularization_of(name, f)};
      const auto start = std::chrono::steady_clock::now();
      small_lm::Parameters<float> p = train(f, corpus, v, outliers_csv, loss_csv);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      small_lm::save_model(f.out_dir / name, f.config, v.regularization, p);
      rows.push_back(evaluate(f, f.config, corpus, name, p, v.regularization, seconds));
    }
    print_table(rows, corpus.unigram_perplexity(corpus.validation_batch(f.eval_sequences)), f.qat_bits);
    std::ofstream results(f.out_dir / "results.csv");
    results << "variant,train_seconds,full_precision";
    for (llama::Method m : llama::kAllMethods) results << ',' << llama::method_name(m);
    for (llama::Method m : llama::kAllMethods) results << ',' << llama::method_name(m) << " integer";
    results << ",learned_clip\n";
    for (const Row& r : rows) {
      results << r.variant << ',' << r.train_seconds << ',' << r.full_precision;
      for (double v : r.methods) results << ',' << v;
      for (double v : r.integer) results << ',' << v;
      results << ',';
      if (r.learned_clip) results << *r.learned_clip;
      results << '\n';
    }
    std::cout << "\nwrote " << (f.out_dir / "results.csv").string() << ", outliers.csv, loss.csv and the models in "
              << f.out_dir.string() << "/<variant>/\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "03_small_transformer: " << e.what() << '\n';
    return 1;
  }
}
