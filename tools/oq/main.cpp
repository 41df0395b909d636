// tools/oq/main.cpp: the oq command-line tool.
//
//   oq quantize MODEL --calib DATA --method duquant+smooth [--weights gptq] --out DIR
//   oq eval MODEL_OR_QUANTIZED --data DATA
//   oq analyze MODEL --calib DATA --out DIR
//   oq study MODEL --calib DATA --data DATA --methods RTN,DuQuant+GPTQ --seeds 5 --out DIR
//
// Argument parsing only; the work is in pipeline.hpp, analyze.hpp and study.hpp.
#include "analyze.hpp"
#include "data.hpp"
#include "model.hpp"
#include "pipeline.hpp"
#include "quantized_model.hpp"
#include "study.hpp"

#include <oq/cpu.hpp>

#include <CLI/CLI.hpp>
#include <Eigen/Core>

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

struct DataOptions {
  std::filesystem::path path;
  std::size_t seq_len = 0;  ///< 0: min(max_position_embeddings, 2048), or 512 when unknown
  std::size_t sequences = 0;
  std::filesystem::path tokenizer;  ///< empty: MODEL/tokenizer.model when present
};

void add_data_options(CLI::App* app, DataOptions& d, const char* flag, const char* what, std::size_t default_sequences) {
  d.sequences = default_sequences;
  app->add_option(flag, d.path, what)->required()->check(CLI::ExistingFile);
  app->add_option("--seq-len", d.seq_len,
                  "tokens per sequence (default: the model's max_position_embeddings, at most 2048)");
  app->add_option("--sequences", d.sequences, "how many sequences to use from the start of the data (0: all)")
      ->capture_default_str();
  app->add_option("--tokenizer", d.tokenizer, "a SentencePiece tokenizer.model (default: the model's own)")
      ->check(CLI::ExistingFile);
}

std::vector<oq_tool::Sequence> load_sequences(const oq_tool::LlamaModel& model, const DataOptions& d,
                                              const std::string& what) {
  std::filesystem::path tokenizer = d.tokenizer;
  if (tokenizer.empty() && std::filesystem::is_regular_file(model.directory() / "tokenizer.model")) {
    tokenizer = model.directory() / "tokenizer.model";
  }
  if (oq_tool::is_npy_file(d.path)) tokenizer.clear();
  const oq_tool::TokenData data =
      oq_tool::load_tokens(d.path, model.config().vocab_size, tokenizer, model.config().bos_token_id);
  std::size_t seq_len = d.seq_len;
  if (seq_len == 0) {
    const auto max_positions = static_cast<std::size_t>(model.config().max_positions);
    seq_len = max_positions > 0 ? std::min<std::size_t>(max_positions, 2048) : 512;
  }
  auto sequences = oq_tool::make_sequences(data, seq_len, d.sequences, what);
  std::fprintf(stderr, "%s: %zu sequences of %zu tokens, %s\n", what.c_str(), sequences.size(),
               sequences.front().size(), data.source.c_str());
  return sequences;
}

// The quantizer's options that `quantize` and `study` share. act_bits: 4, 8
// or 16 (QuantOptions::act_bits 0).
void add_quant_options(CLI::App* app, llama::QuantOptions& q, int& act_bits) {
  // Shape-dependent checks (the block and group sizes must divide the model's
  // widths) run in validate_quantize_options, before any work.
  app->add_option("--lwc-steps", q.lwc.steps, "LWC weights: AdamW steps of each linear's clip factors")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app->add_option("--w-bits", q.weight_bits, "weight bits (4: the packed INT4 format)")
      ->capture_default_str()
      ->check(CLI::IsMember({4}));
  app->add_option("--a-bits", act_bits, "activation bits: 4, 8, or 16 (not quantized: W4A16)")
      ->capture_default_str()
      ->check(CLI::IsMember({4, 8, 16}));
  app->add_option("--group", q.weight_group, "weights per group of this many inputs (0: per output channel)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app->add_option("--block-size", q.block_size, "DuQuant / Hadamard block size")
      ->capture_default_str()
      ->check(CLI::Range(Eigen::Index{2}, Eigen::Index{65536}));
  app->add_option("--greedy-steps", q.greedy_steps, "DuQuant's greedy rotation steps per block")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  app->add_option("--act-clip", q.act_clip, "activation clip ratio")->capture_default_str()->check(CLI::Range(0.01, 1.0));
  app->add_option("--weight-clip", q.weight_clip, "weight clip ratio")->capture_default_str()->check(CLI::Range(0.01, 1.0));
  app->add_option("--seed", q.seed, "seed of DuQuant's random base rotations (layer i: seed + i) and of QuaRot's "
                                    "residual signs (every layer)")->capture_default_str();
}

// --smooth-alpha's number into both α of `q` (SmoothQuant's and the one
// before a rotation); false, with the message printed (`also`: what else the
// option takes), where it is not one in [0, 1].
bool parse_smooth_alpha(const std::string& text, llama::QuantOptions& q, const char* also) {
  std::size_t used = 0;
  double alpha = -1;
  try {
    alpha = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || !(alpha >= 0 && alpha <= 1)) {
    std::fprintf(stderr, "--smooth-alpha: expected a number in [0, 1]%s, got '%s'\n", also, text.c_str());
    return false;
  }
  q.smoothquant_alpha = alpha;
  q.duquant_alpha = alpha;
  return true;
}

// First SIGINT / SIGTERM: ask the loops to stop at their next step (they
// throw oq_tool::Interrupted, and quantize removes its staging directory);
// SA_RESETHAND makes a second one kill the process at once.
extern "C" void request_interrupt(int signal_number) {
  const int saved_errno = errno;  // write() may change it under the interrupted code
  oq_tool::interrupt_requested.store(signal_number);
  static const char message[] = "\noq: interrupted; stopping after the current step (again to quit at once)\n";
  const ssize_t ignored = ::write(STDERR_FILENO, message, sizeof message - 1);  // async-signal-safe
  (void)ignored;
  errno = saved_errno;
}

void install_interrupt_handler() {
  struct sigaction action {};
  action.sa_handler = request_interrupt;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESETHAND | SA_RESTART;  // reads and writes in flight are not failed with EINTR
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"oq: analyse, quantize (W4A4 / W4A8 / W4A16 with SmoothQuant, Hadamard, DuQuant, QuaRot; RTN, clip "
               "search, GPTQ or LWC weights) and evaluate LLaMA checkpoints"};
  app.require_subcommand(1);
  int threads = 0;
  app.add_option("--threads", threads, "threads for GEMMs and the integer kernels (0: all cores)")
      ->check(CLI::NonNegativeNumber);

  // analyze
  CLI::App* analyze = app.add_subcommand("analyze", "per-layer outlier report of a model's activations");
  std::filesystem::path analyze_model, analyze_out;
  DataOptions analyze_data;
  analyze->add_option("MODEL", analyze_model, "a LlamaForCausalLM directory")->required();
  add_data_options(analyze, analyze_data, "--calib", "text or token ids (.npy) to run the model on", 8);
  analyze->add_option("--out", analyze_out, "directory for the CSV files and figures")->required();

  // quantize
  CLI::App* quantize = app.add_subcommand("quantize", "quantize a model layer by layer and write a quantized checkpoint");
  std::filesystem::path quantize_model, quantize_out;
  DataOptions calib;
  std::string method = "duquant+smooth";
  std::string weights = "rtn";
  bool gptq_flag = false;
  llama::QuantOptions q;
  int act_bits = 4;
  quantize->add_option("MODEL", quantize_model, "a LlamaForCausalLM directory")->required();
  add_data_options(quantize, calib, "--calib", "calibration text or token ids (.npy)", 16);
  quantize->add_option("--method", method,
                       "smoothing x rotation: rtn (neither), smoothquant, hadamard (block), duquant, duquant+smooth, "
                       "quarot, smooth+hadamard, smooth+quarot, duquant-blockwise or duquant-blockwise+smooth "
                       "(DuQuant with one rotation per block instead of one shared by the blocks)")
      ->capture_default_str()
      ->check(CLI::IsMember(std::vector<std::string>(oq_tool::kMethodKeys.begin(), oq_tool::kMethodKeys.end())));
  quantize->add_option("--weights", weights,
                       "the weights' quantizer, on the transformed weights: rtn (round to nearest at --weight-clip), "
                       "clip (each channel's or group's clip ratio of least squared error), gptq (on the transformed "
                       "calibration inputs) or lwc (learned clipping, --lwc-steps AdamW steps per linear)")
      ->capture_default_str()
      ->check(CLI::IsMember(std::vector<std::string>(oq_tool::kWeightKeys.begin(), oq_tool::kWeightKeys.end())));
  quantize->add_flag("--gptq", gptq_flag, "the same as --weights gptq");
  add_quant_options(quantize, q, act_bits);
  std::string smooth_alpha;
  quantize->add_option("--smooth-alpha", smooth_alpha,
                       "smoothing strength α in [0, 1] (default 0.5 for smoothquant, 0.6 before a rotation), or "
                       "'search' (smoothquant: α per input by the quantized linears' error on up to 512 tokens)");
  quantize->add_option("--out", quantize_out, "the quantized checkpoint's directory (must not exist)")->required();
  bool no_fold = false;
  quantize->add_flag("--no-fold", no_fold,
                     "store the smoothing scales as online transforms instead of folding them into the RMSNorm "
                     "weights and v_proj / up_proj (the activations then equal the calibration run's bit for bit)");

  // eval
  CLI::App* eval = app.add_subcommand("eval", "perplexity of a model or a quantized checkpoint");
  std::filesystem::path eval_model;
  DataOptions eval_data;
  bool fake = false;
  eval->add_option("MODEL", eval_model, "a LlamaForCausalLM directory or a quantized checkpoint")->required();
  add_data_options(eval, eval_data, "--data", "evaluation text or token ids (.npy)", 0);
  eval->add_flag("--fake", fake, "a quantized checkpoint by fake quantization even where integer kernels exist");

  // study
  CLI::App* study = app.add_subcommand(
      "study", "the crossed study: perplexity of each point smoothing x rotation x weights over seeds, with bootstrap "
               "intervals and paired differences from a baseline (fake quantization, nothing written but the tables)");
  std::filesystem::path study_model, study_out, study_data_path;
  DataOptions study_calib;
  std::size_t study_eval_sequences = 0;
  std::vector<std::string> study_methods;
  std::string study_baseline = "RTN";
  std::string study_alpha;
  oq_tool::StudyOptions study_options;
  llama::QuantOptions& sq = study_options.quant;
  int study_act_bits = 4;
  study->add_option("MODEL", study_model, "a LlamaForCausalLM directory")->required();
  add_data_options(study, study_calib, "--calib", "calibration text or token ids (.npy)", 16);
  study->add_option("--data", study_data_path, "held-out text or token ids (.npy), cut like --calib")
      ->required()
      ->check(CLI::ExistingFile);
  study->add_option("--eval-sequences", study_eval_sequences, "how many sequences of --data (0: all)")
      ->capture_default_str();
  study->add_option("--methods", study_methods,
                    "comma-separated points, named as the examples name them: [smooth+|smooth-search+][Hadamard+|"
                    "DuQuant+|DuQuant-blockwise+|QuaRot+](RTN|clip|GPTQ|LWC), e.g. RTN,smooth-search+RTN,"
                    "DuQuant+GPTQ (default: all 44 of the examples' study; with --a-bits 16 without the α "
                    "search, which scores quantized activations)")
      ->delimiter(',');
  study->add_option("--baseline", study_baseline, "the point the paired differences are taken against")
      ->capture_default_str();
  study->add_option("--seeds", study_options.seeds,
                    "draws of each random point (DuQuant's Q', QuaRot's signs); draw k takes --seed + k x layers")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  study->add_option("--resamples", study_options.bootstrap.resamples, "bootstrap resamples")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  add_quant_options(study, sq, study_act_bits);
  study->add_option("--smooth-alpha", study_alpha,
                    "smoothing strength α in [0, 1] of the points that smooth with a fixed α (default 0.5 without a "
                    "rotation, 0.6 before one)");
  study->add_option("--out", study_out, "directory for study.csv and study.md")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int status = app.exit(e);  // prints the help or the error
    return status == 0 ? 0 : 2;      // 2: a bad command line, as the examples
  }

  install_interrupt_handler();
  try {
    if (threads > 0) Eigen::setNbThreads(threads);
    const int kernel_threads = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    oq::cpu::ThreadPool pool(kernel_threads);
    oq::cpu::KernelOptions kernels;
    kernels.pool = &pool;  // its thread count is the kernels' (KernelOptions::threads stays 0)

    if (analyze->parsed()) {
      const oq_tool::LlamaModel model(analyze_model);
      const auto sequences = load_sequences(model, analyze_data, "calibration data");
      const auto report = oq_tool::analyze_model(model, sequences, analyze_out);
      oq_tool::print_analysis(std::cout, report);
      std::cout << "\nwrote " << (analyze_out / "layers.csv").string() << ", "
                << (analyze_out / "channels.csv").string() << ", " << (analyze_out / "massive.csv").string()
                << "\nfigures " << (analyze_out / "massive.png").string() << ", "
                << (analyze_out / "channels.png").string() << "\n";
    } else if (quantize->parsed()) {
      if (gptq_flag && weights != "rtn" && weights != "gptq") {
        std::fprintf(stderr, "--gptq: --weights is %s; give one of them\n", weights.c_str());
        return 2;
      }
      const oq_tool::LlamaModel model(quantize_model);
      q.act_bits = act_bits == 16 ? 0 : act_bits;
      llama::MethodSpec spec =
          oq_tool::spec_from_key(method, oq_tool::weights_from_key(gptq_flag ? std::string("gptq") : weights));
      if (smooth_alpha == "search") {
        spec.alpha_search = true;
      } else if (!smooth_alpha.empty()) {
        if (!parse_smooth_alpha(smooth_alpha, q, " or 'search'")) return 2;
        if (!spec.smooth) {
          std::fprintf(stderr,
                       "--smooth-alpha: --method %s does not smooth (smoothquant, duquant+smooth, smooth+hadamard, "
                       "smooth+quarot, duquant-blockwise+smooth do)\n",
                       method.c_str());
          return 2;
        }
      }
      q.progress = {};
      q.pool = &pool;  // DuQuant's greedy steps on --threads
      const auto sequences = load_sequences(model, calib, "calibration data");
      const auto result = oq_tool::quantize_model(model, sequences, spec, q, quantize_out,
                                                  oq_tool::ExportOptions{.fold_smoothing = !no_fold});
      std::printf("quantized %d layers with %s (W%dA%d, %s weights%s) in %s (calibration %s); wrote %s\n",
                  model.num_layers(), method.c_str(), q.weight_bits, act_bits,
                  std::string(llama::weight_quant_name(spec.weights)).c_str(),
                  q.weight_group > 0 ? (", group " + std::to_string(q.weight_group)).c_str() : "",
                  oq_tool::format_seconds(result.seconds).c_str(),
                  oq_tool::format_seconds(result.calibration_seconds).c_str(), quantize_out.string().c_str());
    } else if (study->parsed()) {
      const oq_tool::LlamaModel model(study_model);
      sq.act_bits = study_act_bits == 16 ? 0 : study_act_bits;
      if (!study_alpha.empty() && !parse_smooth_alpha(study_alpha, sq, "")) return 2;
      const std::vector<llama::MethodSpec> points = llama::study_method_specs();
      if (!study_methods.empty()) {
        study_options.specs = llama::select_specs(study_methods, points);
      } else if (sq.act_bits == 0) {
        std::erase_if(study_options.specs, [](const llama::MethodSpec& p) { return p.alpha_search; });
      }
      study_options.baseline = llama::select_specs({study_baseline}, points).front();
      sq.pool = &pool;
      study_options.progress = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
      const auto calibration = load_sequences(model, study_calib, "calibration data");
      DataOptions held_out = study_calib;
      held_out.path = study_data_path;
      held_out.sequences = study_eval_sequences;
      const auto evaluation = load_sequences(model, held_out, "evaluation data");
      // The output files are opened before the work (hours on a large
      // model), so that an --out that cannot be written fails at once.
      std::filesystem::create_directories(study_out);
      std::ofstream csv(study_out / "study.csv"), md(study_out / "study.md");
      if (!csv || !md) throw std::runtime_error("cannot write study.csv and study.md in '" + study_out.string() + "'");
      const oq_tool::StudyReport report = oq_tool::run_study(model, calibration, evaluation, study_options);
      oq_tool::write_study_csv(csv, report);
      oq_tool::write_study_markdown(md, report);
      csv.close();
      md.close();
      if (!csv || !md) throw std::runtime_error("cannot write study.csv and study.md in '" + study_out.string() + "'");
      oq_tool::write_study_markdown(std::cout, report);
      std::cout << "\nwrote " << (study_out / "study.csv").string() << ", " << (study_out / "study.md").string() << "\n";
    } else if (eval->parsed()) {
      const oq_tool::LlamaModel model(eval_model);
      const auto sequences = load_sequences(model, eval_data, "evaluation data");
      const auto r = oq_tool::evaluate(model, sequences, kernels, fake);
      std::printf("perplexity %.4f over %lld predicted tokens (%lld sequences) in %s\npath: %s\n",
                  r.perplexity.value(), static_cast<long long>(r.perplexity.predictions),
                  static_cast<long long>(r.sequences), oq_tool::format_seconds(r.seconds).c_str(),
                  std::string(oq_tool::eval_path_name(r.path)).c_str());
    }
  } catch (const oq_tool::Interrupted&) {
    std::fprintf(stderr, "oq: stopped\n");
    return 128 + oq_tool::interrupt_requested.load();  // as a shell reports a process the signal killed
  } catch (const std::exception& e) {
    std::fprintf(stderr, "oq: error: %s\n", e.what());
    return 1;
  }
  // A signal after the last step: the work finished, but say so in the status.
  if (const int signal_number = oq_tool::interrupt_requested.load(); signal_number != 0) return 128 + signal_number;
  return 0;
}
