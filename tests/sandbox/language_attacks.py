"""Hostile programs in the catalogue's compiled languages, and hostile sources for their compilers.

``PROGRAMS`` holds one program per runtime that does, in that language, whatever attack the
first line of its stdin names; one compile serves every case of a session, so a
session can attack in case 0 and show in case 1 that it survived, or look for what case 0 left
behind. The output of each mode is the same in every language:

* ``fork``: fork until the deadline (Java, which cannot fork, starts threads until one fails,
  then spins); the original process prints ``failed after N`` once its first fork fails.
* ``memory``: allocate and touch 16 MiB after 16 MiB, printing the MiB touched so far.
* ``output``: print lines of ``y`` forever.
* ``busy``: spin on the CPU forever.
* ``write``: try to change the code directory (the source, a new file, the compiled artifact)
  and to write outside it, then write a file in scratch; one ``probe=ok|denied`` line each.
* ``look``: say whether what ``write`` left in scratch and in the build directory is still there.
* ``hello``: print ``alive``.

``COMPILE_ATTACKS`` are sources whose compile step is the attack; none of them compiles, and one
includes ``HOST_CANARY``, which the test replaces with the path of a file on the host.
"""

from __future__ import annotations

from dataclasses import dataclass

from executions.models import CompileStatus

# What the write probes leave behind, for the next case to look for.
SCRATCH_FILE = "/tmp/left-behind"
BUILD_DIR_FILE = "/sandbox/build/left-behind"
WRITE_REPORT = (
    b"append source=denied\n"
    b"create in code=denied\n"
    b"overwrite artifact=denied\n"
    b"remove artifact=denied\n"
    b"chmod artifact=denied\n"
    b"write build dir=denied\n"
    b"write scratch=ok\n"
)
LOOK_REPORT = b"scratch file=gone\nbuild dir file=gone\n"

_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void fork_bomb(void) {
    pid_t original = getpid();
    long forked = 0;
    int told = 0;
    for (;;) {
        pid_t pid = fork();
        if (getpid() != original) continue; /* a child: bomb on */
        if (pid > 0) forked++;
        if (pid < 0 && !told) {
            printf("failed after %ld\n", forked);
            fflush(stdout);
            told = 1;
        }
    }
}

static void memory_bomb(void) {
    for (long mib = 16;; mib += 16) {
        char *chunk = (char *)malloc(16 << 20);
        if (!chunk) exit(3);
        memset(chunk, 1, 16 << 20);
        printf("%ld\n", mib);
        fflush(stdout);
    }
}

static const char *outcome(int failed) { return failed ? "denied" : "ok"; }

static int append(const char *path) {
    int fd = open(path, O_WRONLY | O_APPEND);
    if (fd < 0) return -1;
    int written = (int)write(fd, "x", 1);
    close(fd);
    return written == 1 ? 0 : -1;
}

static int create(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0755);
    if (fd < 0) return -1;
    close(fd);
    return 0;
}

int main(void) {
    char mode[32] = "";
    if (!fgets(mode, sizeof mode, stdin)) return 2;
    mode[strcspn(mode, "\n")] = 0;
    if (!strcmp(mode, "fork")) fork_bomb();
    if (!strcmp(mode, "memory")) memory_bomb();
    if (!strcmp(mode, "output"))
        for (;;) fputs("yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\n", stdout);
    if (!strcmp(mode, "busy")) {
        volatile unsigned long spins = 0;
        for (;;) spins++;
    }
    if (!strcmp(mode, "write")) {
        printf("append source=%s\n", outcome(append("SOURCE")));
        printf("create in code=%s\n", outcome(create("planted")));
        printf("overwrite artifact=%s\n", outcome(append("main")));
        printf("remove artifact=%s\n", outcome(unlink("main")));
        printf("chmod artifact=%s\n", outcome(chmod("main", 0777)));
        printf("write build dir=%s\n", outcome(create("BUILD_DIR_FILE")));
        printf("write scratch=%s\n", outcome(create("SCRATCH_FILE")));
        return 0;
    }
    if (!strcmp(mode, "look")) {
        printf("scratch file=%s\n", access("SCRATCH_FILE", F_OK) ? "gone" : "present");
        printf("build dir file=%s\n", access("BUILD_DIR_FILE", F_OK) ? "gone" : "present");
        return 0;
    }
    if (!strcmp(mode, "hello")) {
        puts("alive");
        return 0;
    }
    return 2;
}
"""

_GO = r"""
package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"syscall"
)

func forkBomb() {
	forked, told := 0, false
	for {
		// A raw fork: the child is this one thread, which only ever forks again.
		pid, _, errno := syscall.RawSyscall(syscall.SYS_FORK, 0, 0, 0)
		if pid == 0 && errno == 0 {
			for {
				syscall.RawSyscall(syscall.SYS_FORK, 0, 0, 0)
			}
		}
		if errno == 0 {
			forked++
		} else if !told {
			fmt.Printf("failed after %d\n", forked)
			told = true
		}
	}
}

func memoryBomb() {
	var chunks [][]byte
	for mib := 16; ; mib += 16 {
		chunk := make([]byte, 16<<20)
		for i := 0; i < len(chunk); i += 4096 {
			chunk[i] = 1
		}
		chunks = append(chunks, chunk)
		fmt.Println(mib)
	}
}

func outcome(err error) string {
	if err != nil {
		return "denied"
	}
	return "ok"
}

func appendTo(path string) error {
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer file.Close()
	_, err = file.Write([]byte("x"))
	return err
}

func create(path string) error {
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0755)
	if err != nil {
		return err
	}
	return file.Close()
}

func present(path string) string {
	if _, err := os.Stat(path); err != nil {
		return "gone"
	}
	return "present"
}

func main() {
	mode, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	switch strings.TrimSpace(mode) {
	case "fork":
		forkBomb()
	case "memory":
		memoryBomb()
	case "output":
		out := bufio.NewWriter(os.Stdout)
		for {
			out.WriteString(strings.Repeat("y", 63) + "\n")
		}
	case "busy":
		for {
		}
	case "write":
		fmt.Printf("append source=%s\n", outcome(appendTo("SOURCE")))
		fmt.Printf("create in code=%s\n", outcome(create("planted")))
		fmt.Printf("overwrite artifact=%s\n", outcome(appendTo("main")))
		fmt.Printf("remove artifact=%s\n", outcome(os.Remove("main")))
		fmt.Printf("chmod artifact=%s\n", outcome(os.Chmod("main", 0777)))
		fmt.Printf("write build dir=%s\n", outcome(create("BUILD_DIR_FILE")))
		fmt.Printf("write scratch=%s\n", outcome(create("SCRATCH_FILE")))
	case "look":
		fmt.Printf("scratch file=%s\n", present("SCRATCH_FILE"))
		fmt.Printf("build dir file=%s\n", present("BUILD_DIR_FILE"))
	case "hello":
		fmt.Println("alive")
	default:
		os.Exit(2)
	}
}
"""

_RUST = r"""
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

extern "C" {
    fn fork() -> i32;
}

fn fork_bomb() -> ! {
    let original = std::process::id();
    let (mut forked, mut told) = (0u64, false);
    loop {
        let pid = unsafe { fork() };
        if std::process::id() != original {
            continue; // a child: bomb on
        }
        if pid > 0 {
            forked += 1;
        } else if pid < 0 && !told {
            println!("failed after {}", forked);
            told = true;
        }
    }
}

fn memory_bomb() -> ! {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        chunks.push(vec![1u8; 16 << 20]);
        println!("{}", chunks.len() * 16);
    }
}

fn outcome<T>(result: io::Result<T>) -> &'static str {
    if result.is_ok() { "ok" } else { "denied" }
}

fn append(path: &str) -> io::Result<()> {
    OpenOptions::new().append(true).open(path)?.write_all(b"x")
}

fn create(path: &str) -> io::Result<()> {
    OpenOptions::new().write(true).create(true).truncate(true).mode(0o755).open(path).map(|_| ())
}

fn present(path: &str) -> &'static str {
    if Path::new(path).exists() { "present" } else { "gone" }
}

fn main() {
    let mut mode = String::new();
    io::stdin().lock().read_line(&mut mode).unwrap();
    match mode.trim() {
        "fork" => fork_bomb(),
        "memory" => memory_bomb(),
        "output" => {
            let mut out = io::BufWriter::new(io::stdout());
            let line = "y".repeat(63) + "\n";
            loop {
                if out.write_all(line.as_bytes()).is_err() {
                    std::process::exit(1);
                }
            }
        }
        "busy" => loop {},
        "write" => {
            println!("append source={}", outcome(append("SOURCE")));
            println!("create in code={}", outcome(create("planted")));
            println!("overwrite artifact={}", outcome(append("main")));
            println!("remove artifact={}", outcome(fs::remove_file("main")));
            let all = fs::Permissions::from_mode(0o777);
            println!("chmod artifact={}", outcome(fs::set_permissions("main", all)));
            println!("write build dir={}", outcome(create("BUILD_DIR_FILE")));
            println!("write scratch={}", outcome(create("SCRATCH_FILE")));
        }
        "look" => {
            println!("scratch file={}", present("SCRATCH_FILE"));
            println!("build dir file={}", present("BUILD_DIR_FILE"));
        }
        "hello" => println!("alive"),
        _ => std::process::exit(2),
    }
}
"""

_JAVA = r"""
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.io.FileOutputStream;
import java.io.FileDescriptor;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.PosixFilePermissions;

public class Main {
    interface Probe {
        void run() throws Exception;
    }

    static String outcome(Probe probe) {
        try {
            probe.run();
            return "ok";
        } catch (Exception e) {
            return "denied";
        }
    }

    static void create(String path) throws Exception {
        Files.write(Path.of(path), new byte[0]);
    }

    static void append(String path) throws Exception {
        Files.write(Path.of(path), new byte[] {'x'}, StandardOpenOption.APPEND);
    }

    static String present(String path) {
        return Files.exists(Path.of(path)) ? "present" : "gone";
    }

    // Java cannot fork: threads count against the same limit. Each failure makes the JVM log
    // a warning on stdout, so the bomb stops at the first and holds what it has.
    static void threadBomb() {
        long started = 0;
        try {
            for (;;) {
                Thread thread = new Thread(() -> {
                    try {
                        Thread.sleep(Long.MAX_VALUE);
                    } catch (InterruptedException e) {
                    }
                });
                thread.setDaemon(true);
                thread.start();
                started++;
            }
        } catch (Throwable e) {
            System.out.println("failed after " + started);
        }
        for (;;) {
        }
    }

    // Outside the heap, which the JVM itself limits: only the sandbox stops this.
    static void memoryBomb() throws Exception {
        java.lang.reflect.Field field = sun.misc.Unsafe.class.getDeclaredField("theUnsafe");
        field.setAccessible(true);
        sun.misc.Unsafe unsafe = (sun.misc.Unsafe) field.get(null);
        for (long mib = 16; ; mib += 16) {
            long address = unsafe.allocateMemory(16L << 20);
            unsafe.setMemory(address, 16L << 20, (byte) 1);
            System.out.println(mib);
        }
    }

    public static void main(String[] args) throws Exception {
        String mode = new BufferedReader(new InputStreamReader(System.in)).readLine();
        switch (mode == null ? "" : mode.trim()) {
            case "fork":
                threadBomb();
                return;
            case "memory":
                memoryBomb();
                return;
            case "output": {
                PrintStream out = new PrintStream(new FileOutputStream(FileDescriptor.out), false);
                String line = "y".repeat(63);
                for (;;) out.println(line);
            }
            case "busy": {
                long spins = 0;
                for (;;) spins++;
            }
            case "write":
                System.out.println("append source=" + outcome(() -> append("SOURCE")));
                System.out.println("create in code=" + outcome(() -> create("planted")));
                System.out.println("overwrite artifact=" + outcome(() -> append("Main.class")));
                Path artifact = Path.of("Main.class");
                System.out.println("remove artifact=" + outcome(() -> Files.delete(artifact)));
                System.out.println("chmod artifact=" + outcome(() -> Files.setPosixFilePermissions(
                    artifact, PosixFilePermissions.fromString("rwxrwxrwx"))));
                System.out.println("write build dir=" + outcome(() -> create("BUILD_DIR_FILE")));
                System.out.println("write scratch=" + outcome(() -> create("SCRATCH_FILE")));
                return;
            case "look":
                System.out.println("scratch file=" + present("SCRATCH_FILE"));
                System.out.println("build dir file=" + present("BUILD_DIR_FILE"));
                return;
            case "hello":
                System.out.println("alive");
                return;
            default:
                System.exit(2);
        }
    }
}
"""


def _program(template: str, source_file: str) -> str:
    return (
        template.replace("BUILD_DIR_FILE", BUILD_DIR_FILE)
        .replace("SCRATCH_FILE", SCRATCH_FILE)
        .replace('"SOURCE"', f'"{source_file}"')
        .lstrip()
    )


# Keyed by catalogue entry; C++ compiles the C program (it is valid C++ too).
PROGRAMS: dict[str, str] = {
    "c-gcc12": _program(_C, "main.c"),
    "cpp17-gcc12": _program(_C, "main.cpp"),
    "java-17": _program(_JAVA, "Main.java"),
    "go-1.19": _program(_GO, "main.go"),
    "rust-1.63": _program(_RUST, "main.rs"),
}


@dataclass(frozen=True)
class CompileAttack:
    """A source whose compile step is the attack, how that step must end (``ending``, never
    ``COMPILED``) and what the compiler's output must say."""

    name: str
    entry: str
    source: str
    ending: CompileStatus
    says: bytes = b""


# Exponentially many distinct instantiations: memory grows until the limit stops it.
_TEMPLATE_BOMB = """
template <int N, unsigned long long M> struct Bomb {
    static constexpr unsigned long long value =
        Bomb<N - 1, 2 * M>::value + Bomb<N - 1, 2 * M + 1>::value;
};
template <unsigned long long M> struct Bomb<0, M> {
    static constexpr unsigned long long value = M;
};
int main() { return Bomb<40, 1>::value != 0; }
"""

# A 16-byte string pasted 16^7 times: 4 GiB of string literal.
_MACRO_BOMB = (
    '#define A0 "xxxxxxxxxxxxxxxx"\n'
    + "".join(f"#define A{level} {f'A{level - 1} ' * 16}\n" for level in range(1, 8))
    + "const char *text = A7;\nint main(void) { return text[0] == 0; }\n"
)

# Each value<K> is a constant evaluation of its own, under GCC's per-evaluation operation
# limit; 256 of them take minutes. Few distinct integers arise (each one GCC keeps until the end),
# so memory stays flat and only the time limit ends it.
_ENDLESS_CONSTEXPR = """
#include <utility>

constexpr unsigned spin(unsigned seed) {
    unsigned sum = seed;
    for (unsigned i = 0; i < 1000; ++i)
        for (unsigned j = 0; j < 1000; ++j)
            sum = (sum + (i ^ j)) & 1023;
    return sum;
}
template <unsigned K> constexpr unsigned value = spin(K);
template <unsigned... K>
constexpr unsigned total(std::integer_sequence<unsigned, K...>) {
    return (value<K> + ...);
}
int main() { return total(std::make_integer_sequence<unsigned, 256>()) == 0; }
"""

# Five thousand errors, each with a note per macro level: megabytes of diagnostics.
_ENDLESS_DIAGNOSTICS = """
#define E1 1 = 1;
#define E10 E1 E1 E1 E1 E1 E1 E1 E1 E1 E1
#define E100 E10 E10 E10 E10 E10 E10 E10 E10 E10 E10
#define E1000 E100 E100 E100 E100 E100 E100 E100 E100 E100 E100
void f(void) { E1000 E1000 E1000 E1000 E1000 }
int main(void) { return 0; }
"""


# Stands for the path of a file on the host, in no image, which the test creates.
HOST_CANARY = "HOST-CANARY-PATH"
_KILLED = b"fatal error: Killed signal terminated program"


def _including(path: str, entry: str) -> str:
    main = "int main(void) { return 0; }" if entry == "c-gcc12" else "int main() {}"
    return f'#include "{path}"\n{main}\n'


def _includes(entry: str) -> list[CompileAttack]:
    language = "c" if entry == "c-gcc12" else "cpp"
    return [
        # The preprocessor reads an endless file into memory.
        CompileAttack(
            f"{language}_include_dev_zero",
            entry,
            _including("/dev/zero", entry),
            CompileStatus.MEMORY_LIMIT,
            _KILLED,
        ),
        CompileAttack(
            f"{language}_include_dev_urandom",
            entry,
            _including("/dev/urandom", entry),
            CompileStatus.MEMORY_LIMIT,
            _KILLED,
        ),
        # The compiler sees the image's filesystem only.
        CompileAttack(
            f"{language}_include_host_file",
            entry,
            _including(HOST_CANARY, entry),
            CompileStatus.FAILED,
            b"No such file or directory",
        ),
        # The compiler waits forever for what it has not written yet: its own output (a pipe to
        # the assembler, with -pipe).
        CompileAttack(
            f"{language}_include_own_output",
            entry,
            _including("/dev/stdout", entry),
            CompileStatus.TIME_LIMIT,
        ),
        # The compiler runs as the sandbox user.
        CompileAttack(
            f"{language}_include_etc_shadow",
            entry,
            _including("/etc/shadow", entry),
            CompileStatus.FAILED,
            b"/etc/shadow: Permission denied",
        ),
        CompileAttack(
            f"{language}_endless_diagnostics",
            entry,
            _ENDLESS_DIAGNOSTICS,
            CompileStatus.OUTPUT_LIMIT,
            b"error: lvalue required as left operand of assignment",
        ),
    ]


COMPILE_ATTACKS: list[CompileAttack] = [
    CompileAttack(
        "cpp_template_bomb", "cpp17-gcc12", _TEMPLATE_BOMB, CompileStatus.MEMORY_LIMIT, _KILLED
    ),
    CompileAttack("c_macro_bomb", "c-gcc12", _MACRO_BOMB, CompileStatus.MEMORY_LIMIT, _KILLED),
    CompileAttack(
        "cpp_endless_constexpr", "cpp17-gcc12", _ENDLESS_CONSTEXPR, CompileStatus.TIME_LIMIT
    ),
    *_includes("c-gcc12"),
    *_includes("cpp17-gcc12"),
]
