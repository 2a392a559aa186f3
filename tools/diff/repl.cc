// tools/diff/repl.cc: the REPL's two halves. The parent reads and checks lines and keeps the
// history of operations; a forked child owns the stages, performs each operation on every one
// and prints the answers (an operation ending in `@2` on a helper thread, threads.h). The parent
// never touches a stage, so every child starts from fresh heaps, and `undo` is: end the child,
// fork a new one, replay the history quietly.
#include "tools/diff/repl.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <sstream>
#include <string>

#include "tools/diff/report.h"
#include "tools/diff/threads.h"

namespace edu::diff {
namespace {

constexpr const char* kReplHelp = R"(commands:
  a ID SIZE     malloc(SIZE) as block ID, in every stage; after each operation every stage's
                heap, what the operation changed first ('-' then, '+' now)
  f ID          free block ID
  r ID SIZE     realloc block ID to SIZE
  ... @N        any of the three done by thread N (2..4; 1, the default, is the main thread):
                `f 3 @2` frees block 3 from thread 2, a remote free for stage 4
  show [STAGE]  every stage's heap (40 entries each), or all of one stage's (name or number)
  check         run every stage's heap checker
  undo          take back the last operation (the stages start afresh and replay the rest)
  help          this text
  quit          leave (so does the end of the input)
)";

constexpr uint64_t kMaxSize = uint64_t{1} << 40;   // larger requests are refused as typos
constexpr uint64_t kMaxId = 1u << 20;
constexpr std::size_t kHeapLines = 40;

// The child: one line in (a command already checked by the parent), its output, one byte back.
class Child {
public:
    Child(const std::vector<const Stage*>& stages, std::ostream& out) : stages_(stages), out_(out) {}

    [[noreturn]] void serve(int commands, int acks) {
        FILE* in = fdopen(commands, "r");
        char line[256];
        while (in && std::fgets(line, sizeof line, in)) {
            std::string text(line);
            bool quiet = text.compare(0, 2, "q ") == 0;
            perform(quiet ? text.substr(2) : text, quiet);
            out_.flush();
            char ack = 1;
            if (write(acks, &ack, 1) != 1) break;
        }
        _exit(0);
    }

private:
    struct Held {
        void* ptr = nullptr;
    };

    void perform(const std::string& line, bool quiet) {
        std::istringstream words(line);
        std::string verb;
        words >> verb;
        if (verb == "show") {
            std::string which;
            words >> which;
            for (const Stage* s : stages_)
                if (which.empty() || which == s->name || which == std::to_string(s->number)) show(*s, which.empty() ? kHeapLines : SIZE_MAX);
            return;
        }
        if (verb == "check") {
            for (const Stage* s : stages_) {
                CheckResult c = s->single_thread->check();
                out_ << s->name << ": " << (c.ok ? "ok" : "FAILED: ") << (c.ok ? "" : c.message) << ", " << c.live_blocks
                     << " live blocks (" << human_bytes(c.live_bytes) << "), " << c.free_blocks << " free\n";
            }
            return;
        }
        uint32_t id = 0;
        uint64_t size = 0;
        words >> id;
        if (verb != "f") words >> size;
        std::string at;
        unsigned thread = words >> at && at[0] == '@' ? static_cast<unsigned>(std::stoul(at.substr(1))) : 1;
        for (const Stage* s : stages_) {
            // Another thread goes through the stage's thread-safe entry, the main thread waiting.
            const Api& api = thread == 1 ? *s->single_thread : *s->thread_safe;
            void*& p = held_[s][id].ptr;
            helpers_.run(thread, [&] {
                if (verb == "a") p = api.malloc(size);
                else if (verb == "r") p = api.realloc(p, size);
                else if (verb == "f") api.free(p), p = nullptr;
            });
            std::string answer = verb == "f" ? "freed" : describe(*s, p);
            if (quiet) continue;
            out_ << "== " << s->name << ": " << line.substr(0, line.find('\n')) << " -> " << answer << "\n";
            show(*s, kHeapLines, true);
        }
    }

    std::string describe(const Stage& s, void* p) {
        if (!p) return "NULL (ENOMEM)";
        std::ostringstream d;
        const auto offset = static_cast<int64_t>(reinterpret_cast<uintptr_t>(p) - origin(s));
        d << (offset < 0 ? "" : "+") << offset << " (usable "
          << s.single_thread->usable_size(p) << " B)";
        return d.str();
    }

    // The address print_heap counts from: the walk's first entry.
    static uintptr_t origin(const Stage& s) {
        uintptr_t first = 0;
        s.single_thread->walk(
            [](const WalkEntry& e, void* ctx) {
                *static_cast<uintptr_t*>(ctx) = reinterpret_cast<uintptr_t>(e.address);
                return false;
            },
            &first);
        return first;
    }

    // The stage's heap; after an operation (`changes`), what it changed first, as --steps
    // prints it (report.h).
    void show(const Stage& s, std::size_t lines, bool changes = false) {
        std::vector<HeapLine> heap = heap_lines(s);
        const std::string all = "'show " + std::to_string(s.number) + "' prints them all";
        out_ << s.name << " heap:\n";
        auto last = shown_.find(&s);
        if (changes && last != shown_.end()) print_heap_changes(out_, last->second, heap, "the heap shown before", lines, all);
        print_heap(out_, heap, lines, all);
        shown_[&s] = std::move(heap);
    }

    const std::vector<const Stage*>& stages_;
    std::ostream& out_;
    std::map<const Stage*, std::map<uint32_t, Held>> held_;
    std::map<const Stage*, std::vector<HeapLine>> shown_;   // the heap shown last, per stage
    Helpers helpers_;
};

class Repl {
public:
    Repl(const std::vector<const Stage*>& stages, std::ostream& out) : stages_(stages), out_(out) {}
    ~Repl() { stop(); }

    int run(std::istream& in) {
        const bool interactive = isatty(0);
        if (interactive) out_ << "stagediff REPL: 'help' lists the commands.\n";
        start();
        int status = 0;
        std::string line;
        for (unsigned number = 1;; ++number) {
            if (interactive) out_ << "> " << std::flush;
            if (!std::getline(in, line)) break;
            std::string error = handle(line);
            if (error == "quit") break;
            if (!error.empty()) {
                out_ << "stdin:" << number << ": " << error << "\n";
                status = 2;
            }
        }
        out_.flush();
        return status;
    }

private:
    // Returns "" when done, "quit", or what was wrong with the line.
    std::string handle(const std::string& line) {
        std::istringstream words(line);
        std::vector<std::string> w;
        for (std::string word; words >> word;) w.push_back(word);
        if (w.empty() || w[0][0] == '#') return "";
        const std::string& verb = w[0];
        if (verb == "help" || verb == "?") return out_ << kReplHelp, "";
        if (verb == "quit" || verb == "exit") return "quit";
        if (verb == "check" && w.size() == 1) return send("check"), "";
        if (verb == "show" && w.size() <= 2) {
            if (w.size() == 2 && !known_stage(w[1])) return "no stage '" + w[1] + "' is selected";
            return send(line), "";
        }
        if (verb == "undo" && w.size() == 1) {
            if (history_.empty()) return "nothing to undo";
            out_ << "undo '" << history_.back() << "': replaying " << history_.size() - 1 << " operations afresh\n";
            undo_live(history_.back());
            history_.pop_back();
            stop();
            start();
            for (const std::string& h : history_) send("q " + h);
            send("show");
            return "";
        }
        bool sized = verb == "a" || verb == "r";
        uint64_t thread = 1;
        if (w.size() > 2 && w.back()[0] == '@') {
            if (!number(w.back().substr(1), kMaxThreads, &thread) || thread < 1)
                return "bad thread '" + w.back() + "' (threads are @1..@" + std::to_string(kMaxThreads) + ")";
            w.pop_back();
        }
        if ((!sized && verb != "f") || w.size() != (sized ? 3u : 2u))
            return "expected 'a ID SIZE', 'f ID', 'r ID SIZE' (each optionally followed by @THREAD), 'show [STAGE]', "
                   "'undo', 'check', 'help' or 'quit', found '" + line + "'";
        uint64_t id = 0, size = 0;
        if (!number(w[1], kMaxId - 1, &id)) return "bad block id '" + w[1] + "' (0.." + std::to_string(kMaxId - 1) + ")";
        if (sized && !number(w[2], kMaxSize, &size)) return "bad size '" + w[2] + "' (at most " + std::to_string(kMaxSize) + ")";
        bool live = live_.count(static_cast<uint32_t>(id)) != 0;
        if (verb == "a" && live) return "block " + w[1] + " is already live";
        if (verb != "a" && !live) return "block " + w[1] + " is not live";
        // Appended piece by piece: gcc 12 at -O3 (--config=opt) misreads `" @" + std::to_string(t)`
        // inside a conditional as an overlapping memcpy (-Wrestrict) and stops the build.
        std::string op = verb + " " + std::to_string(id);
        if (sized) op.append(" ").append(std::to_string(size));
        if (thread != 1) op.append(" @").append(std::to_string(thread));
        if (verb == "f") live_.erase(static_cast<uint32_t>(id));
        else live_[static_cast<uint32_t>(id)] = op;
        history_.push_back(op);
        send(op);
        return "";
    }

    // Undoing an operation restores the liveness the one before it left.
    void undo_live(const std::string& op) {
        uint32_t id = static_cast<uint32_t>(std::stoul(op.substr(2)));
        live_.erase(id);
        for (const std::string& h : history_)
            if (&h != &history_.back() && std::stoul(h.substr(2)) == id) {
                if (h[0] == 'f') live_.erase(id);
                else live_[id] = h;
            }
    }

    static bool number(const std::string& text, uint64_t limit, uint64_t* out) {
        if (text.empty() || text.size() > 15 || text.find_first_not_of("0123456789") != std::string::npos) return false;
        *out = std::stoull(text);
        return *out <= limit;
    }

    bool known_stage(const std::string& name) const {
        for (const Stage* s : stages_)
            if (name == s->name || name == std::to_string(s->number)) return true;
        return false;
    }

    void start() {
        int commands[2], acks[2];
        if (pipe(commands) != 0 || pipe(acks) != 0) {
            perror("stagediff: pipe");
            _exit(2);
        }
        out_.flush();
        pid_ = fork();
        if (pid_ < 0) {
            perror("stagediff: fork");
            _exit(2);
        }
        if (pid_ == 0) {
            close(commands[1]);
            close(acks[0]);
            Child(stages_, out_).serve(commands[0], acks[1]);
        }
        close(commands[0]);
        close(acks[1]);
        to_child_ = commands[1];
        from_child_ = acks[0];
    }

    void stop() {
        if (pid_ <= 0) return;
        close(to_child_);
        close(from_child_);
        int status = 0;
        waitpid(pid_, &status, 0);
        pid_ = -1;
    }

    // Sends one command and waits until the child has printed its answer.
    void send(const std::string& command) {
        out_.flush();
        std::string line = command + "\n";
        char ack = 0;
        if (write(to_child_, line.data(), line.size()) != static_cast<ssize_t>(line.size()) || read(from_child_, &ack, 1) != 1) {
            out_ << "stagediff: a stage died on '" << command << "' (see above); starting afresh\n";
            history_.clear();
            live_.clear();
            stop();
            start();
        }
    }

    const std::vector<const Stage*>& stages_;
    std::ostream& out_;
    std::vector<std::string> history_;           // operations done, in order
    std::map<uint32_t, std::string> live_;       // live ids -> the operation that made them
    pid_t pid_ = -1;
    int to_child_ = -1, from_child_ = -1;
};

}  // namespace

int run_repl(const std::vector<const Stage*>& stages, std::istream& in, std::ostream& out) {
    signal(SIGPIPE, SIG_IGN);
    return Repl(stages, out).run(in);
}

}  // namespace edu::diff
