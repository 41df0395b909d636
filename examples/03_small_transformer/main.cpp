// 03_small_transformer: a small byte-level LLaMA-style model trained here on
// real text, three ways (baseline; kurtosis regularization; kurtosis + QAT of
// the linear inputs), with the outlier statistics logged during training and
// every model evaluated W4A4 with each method afterwards. See README.md.
//
//   03_small_transformer --text kjv.txt                 train the three variants, evaluate, write CSVs
//   03_small_transformer --load out/baseline --text kjv.txt   evaluate a saved model again
//   03_small_transformer --text kjv.txt --study --seeds 5   the crossed, seeded study (study.hpp; README.md)
//   03_small_transformer --help
#include "../common/cli.hpp"
#include "../common/study_flags.hpp"
#include "checkpoint.hpp"
#include "evaluate.hpp"
#include "model.hpp"
#include "study.hpp"
#include "train.hpp"

#include <oq/analysis.hpp>

#include <algorithm>
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
  // --study (study.hpp)
  bool study = false;
  examples::cli::StudyFlags study_flags;  // --seeds, --baseline, --resamples, --lwc-steps
  std::optional<std::filesystem::path> models;  // --study: trained models kept and reused here
  bool train_only = false;                      // --study: train (or find) the models, evaluate nothing
};

// The command line (CLI11: --help lists these with their defaults).
void add_flags(CLI::App& app, Flags& f) {
  using examples::cli::finite_non_negative;
  using examples::cli::integer;
  const CLI::Validator positive = integer<Eigen::Index>(1);
  app.add_option_function<std::string>(
         "--text", [&f](const std::string& file) { f.text = file; },
         "training text (bytes); the last 5% is held out for validation. bash cmake/run.sh train writes the King "
         "James Bible of Debian's bible-kjv to build/kjv.txt and passes it here")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--variants", f.variants, "comma-separated, of baseline, kurtosis, kurtosis+qat (default: all three)")
      ->type_name("LIST")
      ->delimiter(',')
      ->check(CLI::IsMember({"baseline", "kurtosis", "kurtosis+qat"}));
  app.add_option("--steps", f.steps, "training steps per variant")->capture_default_str()->check(integer(1));
  app.add_option("--batch", f.batch, "sequences per step")->capture_default_str()->check(positive);
  app.add_option("--seq-len", f.config.seq_len, "context length")->capture_default_str()->check(positive);
  app.add_option("--hidden", f.config.hidden_size, "model width")->capture_default_str()->check(positive);
  app.add_option("--layers", f.config.num_layers, "decoder blocks")->capture_default_str()->check(positive);
  app.add_option("--heads", f.config.num_heads, "attention heads (divide --hidden)")
      ->capture_default_str()
      ->check(positive);
  app.add_option("--ffn", f.config.intermediate_size, "SwiGLU width")->capture_default_str()->check(positive);
  app.add_option("--lr", f.learning_rate, "peak learning rate")->capture_default_str()->check(finite_non_negative());
  app.add_option("--lambda", f.lambda, "kurtosis regularizer weight λ, summed over tokens (see README)")
      ->capture_default_str()
      ->check(finite_non_negative());
  app.add_option("--qat-bits", f.qat_bits, "bits of the learned-clip QAT of linear inputs")
      ->capture_default_str()
      ->check(integer(2, 8));
  app.add_option("--log-every", f.log_every, "outlier statistics every N steps")
      ->capture_default_str()
      ->check(integer(1));
  app.add_option("--eval-seqs", f.eval_sequences, "validation windows")->capture_default_str()->check(positive);
  app.add_option("--calib-seqs", f.calibration_sequences, "calibration windows for the W4A4 methods")
      ->capture_default_str()
      ->check(positive);
  app.add_option("--block", f.block_size, "DuQuant / Hadamard block size")->capture_default_str()->check(positive);
  app.add_option("--seed", f.seed, "initialisation, batches and DuQuant's Q'")
      ->capture_default_str()
      ->check(integer<std::uint64_t>(0));
  app.add_option_function<std::string>(
         "--load", [&f](const std::string& dir) { f.load = dir; },
         "evaluate a model saved by an earlier run instead of training")
      ->check(CLI::ExistingDirectory);
  app.add_option("--out", f.out_dir, "CSV files, figures' data and saved models")
      ->type_name("DIR")
      ->capture_default_str();
  app.add_flag("--study", f.study,
               "instead of the default run: every variant trained with --seeds seeds (--seed, --seed + 1, ...), each "
               "model evaluated with every point of smoothing x rotation x weights, perplexity per validation window "
               "with bootstrap intervals (study.csv, study.md in --out)");
  examples::cli::add_study_flags(app, f.study_flags, "--study: training seeds per variant");
  app.add_option("--models", f.models,
                 "--study: keep each trained model in DIR/seed<k>/<variant>/ and reuse one found there that was "
                 "trained with the same text and settings (training.json), so a study can be rerun with other "
                 "--methods, resumed, or trained in parallel by --train-only runs over disjoint seeds")
      ->type_name("DIR");
  app.add_flag("--train-only", f.train_only,
               "--study --models: train the models that --models lacks and stop (no evaluation)");
}

// The model's shape as a whole (--heads must divide --hidden, ...), reported
// as a bad command line.
void check_config(const Flags& f) {
  try {
    f.config.validate();
  } catch (const std::invalid_argument& e) {
    throw CLI::ValidationError(std::string("the model's shape (--hidden, --layers, --heads, --ffn, --seq-len): ") +
                               e.what());
  }
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

// One row per (step, layer, tensor) of the outlier statistics CSV: the
// residual stream after each block and the four linear inputs (tokens ×
// channels), and each linear's weight ([out, in]: a row is an output channel,
// a "channel outlier" an input column). massive_tokens counts the tokens where
// Sun et al.'s test (|x| > 100 and >= 1000 × the tensor's median |x|,
// oq::analysis::find_massive_activations) fires: the budget search of the
// README watches it on the residual stream. The weight rows follow
// Nrusimha et al.'s warning that regularizing the activations can move the
// difficulty into the weights.
void log_outliers(std::ostream& csv, const std::string& variant, int step, const small_lm::Model<float>& model,
                  const small_lm::Parameters<float>& params) {
  auto write = [&](std::size_t layer, std::string_view tensor, const small_lm::Matrix<float>& x) {
    const llama::InputStats s = llama::input_stats(x);
    const std::size_t massive_count =
        oq::analysis::massive_tokens(oq::analysis::find_massive_activations(x)).size();
    csv << variant << ',' << step << ',' << layer << ',' << tensor << ',' << s.max_abs << ',' << s.mean_kurtosis
        << ',' << s.outlier_channels << ',' << oq::analysis::median_abs(x) << ',' << massive_count << '\n';
  };
  const auto& caches = model.caches();
  for (std::size_t l = 0; l < caches.size(); ++l) {
    for (llama::Input in : llama::kAllInputs) {
      write(l, llama::input_name(in), caches[l].inputs[static_cast<std::size_t>(in)]);
    }
    write(l, "residual", l + 1 < caches.size() ? caches[l + 1].x : model.final_hidden());
    for (llama::Linear w : llama::kAllLinears) {
      write(l, std::string(llama::linear_name(w)) + " weight", params.layers[l][w]);
    }
  }
}

small_lm::OptimizerOptions optimizer_options(const Flags& f) {
  small_lm::OptimizerOptions o;
  o.learning_rate = f.learning_rate;
  o.total_steps = f.steps;
  o.warmup_steps = std::max(1, f.steps / 20);
  return o;
}

small_lm::Parameters<float> train(const Flags& f, const small_lm::Corpus& corpus, const Variant& v,
                                  std::ostream& outliers_csv, std::ostream& loss_csv) {
  using Clock = std::chrono::steady_clock;
  small_lm::Parameters<float> params = small_lm::Parameters<float>::initial(f.config, f.seed);
  small_lm::Trainer<float> trainer(f.config, v.regularization, optimizer_options(f));
  std::mt19937_64 rng(f.seed + 1);  // the same batches for every variant
  const auto start = Clock::now();
  const double tokens_per_step = static_cast<double>(f.batch * f.config.seq_len);
  for (int step = 0; step < f.steps; ++step) {
    const small_lm::Batch batch = corpus.training_batch(f.batch, rng);
    const auto [loss, norm] = trainer.step(params, batch, [&](const auto& model, const auto& at) {
      if (step % f.log_every == 0 || step + 1 == f.steps) log_outliers(outliers_csv, v.name, step, model, at);
    });
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
  q.head_dim = c.layer_config().head_dim;  // QuaRot's head-wise Hadamard folded into v_proj
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

// The held-out tail of --text (the corpus split every run uses).
constexpr double kValidationFraction = 0.05;

// What decided a model trained for the study: a model kept in --models is
// reused only when all of this matches (the text by its bytes). Eigen's
// thread count is in it because a threaded product may sum in another
// order; "training" counts changes to the training code that no field here
// shows (bump it with them).
nlohmann::json training_record(const Flags& f, const std::string& text_fingerprint, const std::string& variant,
                               std::uint64_t seed) {
  const small_lm::Regularization r = regularization_of(variant, f);
  const small_lm::OptimizerOptions o = optimizer_options(f);
  const small_lm::Config& c = f.config;
  return {{"training", 1},
          {"variant", variant},
          {"seed", seed},
          {"text_fnv1a64", text_fingerprint},
          {"validation_fraction", kValidationFraction},
          {"steps", f.steps},
          {"batch", f.batch},
          {"learning_rate", o.learning_rate},
          {"warmup_steps", o.warmup_steps},
          {"adamw", {o.beta1, o.beta2, o.epsilon, o.weight_decay, o.clip_norm, o.final_fraction}},
          {"kurtosis_lambda", r.kurtosis_lambda},
          {"qat_bits", r.qat_bits},
          {"vocab_size", c.vocab_size},
          {"hidden_size", c.hidden_size},
          {"num_layers", c.num_layers},
          {"num_heads", c.num_heads},
          {"intermediate_size", c.intermediate_size},
          {"seq_len", c.seq_len},
          {"rms_norm_eps", c.rms_norm_eps},
          {"rope_theta", c.rope_theta},
          {"eigen_threads", Eigen::nbThreads()}};
}

// --models: every kept model's record checked before any work, so that a
// mismatch at the last seed does not cost the run before it.
void check_kept_models(const Flags& f, const std::string& fingerprint, const std::vector<std::uint64_t>& seeds) {
  for (const std::string& variant : f.variants) {
    for (std::uint64_t seed : seeds) {
      (void)small_lm::trained_as(*f.models / ("seed" + std::to_string(seed)) / variant,
                                 training_record(f, fingerprint, variant, seed));
    }
  }
}

// --study: the models are trained as the default run trains them (the
// training logs are not written), each seed with its own calibration windows.
void run_study(const Flags& f, const small_lm::Corpus& corpus) {
  small_lm::study::StudyOptions options;
  options.quant.block_size = f.block_size;  // as evaluate() quantizes
  options.quant.lwc.steps = f.study_flags.lwc_steps;
  options.bootstrap.resamples = f.study_flags.resamples;
  options.progress = [](const std::string& line) { progress(line); };
  options.specs = f.study_flags.selected_specs(llama::study_method_specs());
  options.baseline = f.study_flags.baseline_spec(llama::study_method_specs());
  small_lm::study::StudyInputs in;
  in.config = f.config;
  in.validation = corpus.validation_batch(f.eval_sequences);
  in.variants = f.variants;
  for (int s = 0; s < f.study_flags.seeds; ++s) in.seeds.push_back(f.seed + static_cast<std::uint64_t>(s));
  const std::string fingerprint = f.models ? small_lm::text_fingerprint(corpus.bytes()) : std::string();
  in.train = [&f, &corpus, &fingerprint](const std::string& variant, std::uint64_t seed) {
    std::optional<std::filesystem::path> dir;
    nlohmann::json record;
    if (f.models) {
      dir = *f.models / ("seed" + std::to_string(seed)) / variant;
      record = training_record(f, fingerprint, variant, seed);
      if (std::optional<small_lm::LoadedModel> kept = small_lm::load_if_trained_as(*dir, record)) {
        progress("study: " + variant + ", seed " + std::to_string(seed) + ": found in " + dir->string(), true);
        return std::move(kept->parameters);
      }
    }
    Flags seeded = f;
    seeded.seed = seed;
    std::ostream discard(nullptr);  // the default run's training logs
    const Variant v{variant, regularization_of(variant, f)};
    small_lm::Parameters<float> p = train(seeded, corpus, v, discard, discard);
    if (dir) small_lm::keep_trained_model(*dir, f.config, v.regularization, p, record);
    return p;
  };
  if (f.models) check_kept_models(f, fingerprint, in.seeds);
  if (f.train_only) {
    for (const std::string& variant : in.variants) {
      for (std::uint64_t seed : in.seeds) in.train(variant, seed);
    }
    progress("study: every model is in " + f.models->string(), true);
    return;
  }
  in.qat_bits = [&f](const std::string& variant) { return regularization_of(variant, f).qat_bits; };
  in.calibration = [&f, &corpus](std::uint64_t seed) {
    std::mt19937_64 rng(seed + 2);  // as evaluate() draws them
    return corpus.training_batch(f.calibration_sequences, rng);
  };
  const small_lm::study::StudyResult result = small_lm::study::run_study(in, options);
  progress("study: done", true);
  std::ofstream csv(f.out_dir / "study.csv"), md(f.out_dir / "study.md");
  small_lm::study::write_csv(csv, result);
  small_lm::study::write_markdown(md, result);
  csv.close();
  md.close();
  if (!csv || !md) throw std::runtime_error("cannot write study.csv / study.md in '" + f.out_dir.string() + "'");
  small_lm::study::write_markdown(std::cout, result);
  std::cout << '\n' << (f.out_dir / "study.csv").string() << ", " << (f.out_dir / "study.md").string() << '\n';
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Flags f;
    CLI::App app{"A small byte-level LLaMA-style transformer trained on real text three ways (baseline, kurtosis "
                 "regularization, kurtosis + learned-clip QAT), then evaluated W4A4 with every method (see "
                 "examples/03_small_transformer/README.md).",
                 "03_small_transformer"};
    add_flags(app, f);
    if (const std::optional<int> status = examples::cli::parse(app, argc, argv, [&f] { check_config(f); })) {
      return *status;
    }
    std::filesystem::create_directories(f.out_dir);
    std::vector<Row> rows;
    if (f.load && f.study) throw std::invalid_argument("--study trains its own models: --load does not apply");
    if ((f.models || f.train_only) && !f.study) throw std::invalid_argument("--models and --train-only need --study");
    if (f.train_only && !f.models) throw std::invalid_argument("--train-only needs --models DIR to keep the models in");
    if (f.load) {
      small_lm::LoadedModel m = small_lm::load_model(*f.load);
      const small_lm::Corpus corpus = small_lm::Corpus::from_file(*f.text, kValidationFraction, m.config.seq_len);
      rows.push_back(evaluate(f, m.config, corpus, f.load->filename().string(), m.parameters, m.regularization, 0.0));
      print_table(rows, corpus.unigram_perplexity(corpus.validation_batch(f.eval_sequences)),
                  m.regularization.qat_bits);
      return 0;
    }
    const small_lm::Corpus corpus = small_lm::Corpus::from_file(*f.text, kValidationFraction, f.config.seq_len);
    if (f.study) {
      run_study(f, corpus);
      return 0;
    }
    std::cerr << "text: " << corpus.size() << " bytes (" << corpus.training_bytes() << " training, "
              << corpus.validation_bytes() << " validation)\n";
    std::ofstream outliers_csv(f.out_dir / "outliers.csv");
    outliers_csv << "variant,step,layer,tensor,max_abs,mean_kurtosis,outlier_channels,median_abs,massive_tokens\n";
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
