//! Where each `{variable}` of a `run` command lands in POSIX shell syntax, and the reference that carries its
//! value there.
//!
//! A substituted value never becomes part of the script's text: the script refers to an environment variable
//! that holds the value, written for the place it lands in (`"${BUILDIT_BRANCH}"` outside quotes,
//! `${BUILDIT_BRANCH}` inside double quotes or a here-document, `'"${BUILDIT_BRANCH}"'` inside single quotes).
//! A parameter expansion is never parsed again, so the value reaches the command byte for byte, whatever it
//! holds. Where no reference is literal (arithmetic, a quoted here-document, `eval`, the script of `sh -c`),
//! the template is refused with a reason, before anything runs.

/// How a variable is referred to where it lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landing {
    /// Outside quotes (also a `case` word or pattern, an assignment, inside `$(...)`): `"${NAME}"`.
    Unquoted,
    /// Inside double quotes: `${NAME}`.
    DoubleQuoted,
    /// Inside single quotes: the quote is closed around `"${NAME}"`.
    SingleQuoted,
    /// Inside bash's `$'...'`: the quote is closed around `"${NAME}"` and reopened as `$'`.
    AnsiCQuoted,
    /// In the body of an unquoted here-document: `${NAME}`.
    HereDocument,
    /// In a comment: nothing runs it.
    Comment,
}

impl Landing {
    /// The text that refers to the environment variable `name` at this place.
    pub fn reference(self, name: &str) -> String {
        match self {
            Self::Unquoted | Self::Comment => format!("\"${{{name}}}\""),
            Self::DoubleQuoted | Self::HereDocument => format!("${{{name}}}"),
            Self::SingleQuoted => format!("'\"${{{name}}}\"'"),
            Self::AnsiCQuoted => format!("'\"${{{name}}}\"$'"),
        }
    }
}

/// Why a variable cannot be substituted where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What the shell would do with the value there, as a sentence fragment.
    pub reason: String,
    /// What to write instead; `BUILDIT_VALUE` stands for the variable's environment variable.
    pub help: String,
}

impl Refusal {
    /// The help, naming the environment variable `name`.
    pub fn help_for(&self, name: &str) -> String {
        self.help.replace("BUILDIT_VALUE", name)
    }
}

/// One piece of a command: text as written, or a variable.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Piece<'a> {
    Text(&'a str),
    Variable,
}

/// How a command reads as shell code.
#[derive(Debug)]
pub struct Analysis {
    /// The landing of each variable, in order.
    pub landings: Vec<Result<Landing, Refusal>>,
    /// What the command leaves open at its end (a quote, a here-document, `$(`, a trailing `\`), if anything:
    /// the next command of the stage, and the line that echoes it, would land inside.
    pub unfinished: Option<&'static str>,
    /// A declaration gave a variable an attribute (`declare -i n`): assignments in the stage's other commands
    /// may be evaluated too.
    pub declares_attributes: bool,
}

/// Reads `pieces` as a POSIX shell command; with `attributes_declared`, an earlier command of the stage
/// declared a variable with an attribute.
pub(crate) fn analyse<'a>(
    pieces: impl IntoIterator<Item = Piece<'a>>,
    attributes_declared: bool,
) -> Analysis {
    let mut lexer = Lexer {
        attributes_declared,
        ..Lexer::default()
    };
    for piece in pieces {
        match piece {
            Piece::Text(text) => lexer.text(text),
            Piece::Variable => lexer.variable(),
        }
    }
    // The stage's script ends every command with a newline: it ends the last word, starts pending
    // here-documents and closes one whose delimiter is the last line. A trailing `\` would join that
    // newline, and the next line of the script, to the command.
    let dangling = lexer.dangling_backslash;
    lexer.text("\n");
    let unfinished = match dangling && lexer.lost.is_none() {
        true => Some("a trailing `\\`"),
        false => lexer.unfinished(),
    };
    Analysis {
        landings: lexer.landings,
        unfinished,
        declares_attributes: lexer.attributes_declared,
    }
}

/// Frames open at once beyond which BuildIt stops following a command (and refuses the variables after):
/// real commands nest a few levels; following thousands would cost time on every character.
const MAX_DEPTH: usize = 32;

/// Commands that run their arguments (or, for `ssh`, their standard input) as shell code.
const EVALUATORS: [&str; 6] = ["eval", "trap", "ssh", "watch", "parallel", "alias"];
/// Commands whose arguments are arithmetic, or names that bash evaluates (`a[$(...)]`).
const NAME_TAKERS: [&str; 6] = ["let", "read", "unset", "mapfile", "readarray", "getopts"];
/// Commands whose `-v NAME` option takes a name (bash evaluates an index in it).
const NAME_OPTIONS: [&str; 4] = ["[", "test", "printf", "[["];
/// Declarations whose `-i`, `-n`, `-a` or `-A` makes values arithmetic, names or indexed.
const DECLARATIONS: [&str; 4] = ["declare", "typeset", "local", "readonly"];
/// Commands whose `-c` option takes a script.
const SHELLS: [&str; 17] = [
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "yash", "posh", "csh", "tcsh", "fish", "su",
    "runuser", "flock", "script", "sg",
];
/// Variables whose value the shell itself expands or runs (prompts, start-up files, `PROMPT_COMMAND`).
const EVALUATED_VARIABLES: [&str; 7] = [
    "PS1",
    "PS2",
    "PS3",
    "PS4",
    "ENV",
    "BASH_ENV",
    "PROMPT_COMMAND",
];
/// Reserved words after which the next word is a command name again.
const RESERVED: [&str; 14] = [
    "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}", "time", "in",
];
/// `[[ ]]` operators that evaluate their operands as arithmetic.
const ARITHMETIC_TESTS: [&str; 6] = ["-eq", "-ne", "-lt", "-le", "-gt", "-ge"];

/// What closes a command context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closer {
    /// The end of the text.
    End,
    /// `)` of `$(`.
    Paren,
    /// An unescaped backquote.
    Backquote,
}

/// A `[[ ... ]]` being read: its variables are refused once an arithmetic operator shows up.
#[derive(Debug, Default)]
struct TestExpression {
    variables: Vec<usize>,
    arithmetic: bool,
}

/// The state of a command context (the top level, `$(...)`, backquotes).
#[derive(Debug)]
struct Command {
    closer: Closer,
    /// Open `(` inside this context (subshells, function definitions; not the `(` before a `case` pattern).
    parens: u32,
    /// The current word, with quotes removed; `None` between words.
    word: Option<String>,
    /// The current word holds a variable or an expansion.
    word_expands: bool,
    /// The current word holds quotes or backslashes.
    word_quoted: bool,
    /// Index of the current word in its simple command.
    position: usize,
    /// The simple command's first word (its command name, most often).
    first: Option<String>,
    /// A declaration or a command taking `-v NAME` was named in this simple command.
    declaration: Option<String>,
    /// A declaration gave a variable an attribute (`declare -i n`): later assignments may be evaluated.
    attributes_declared: bool,
    /// An earlier word of the simple command runs the rest as code (`eval`).
    evaluator: Option<String>,
    /// A shell was named in this simple command.
    shell: Option<String>,
    /// It was given `-c`: its script follows as an argument (not standard input).
    shell_dash_c: bool,
    /// Its script (or what may be its script) has been read.
    shell_script_read: bool,
    /// The next word that is not an option is the script of `sh -c` (also `<<<` into a shell).
    script: Option<String>,
    /// The arguments are arithmetic or names that bash evaluates (`let`, `read`, `declare -i`...).
    names: Option<String>,
    /// The next word is a name (after `-v` of `test`, `[[` or `printf`).
    name_next: bool,
    /// The previous operator was `<<`/`<<-`: the next word is a here-document delimiter.
    heredoc_operator: Option<bool>,
    /// `[[` is open.
    test: Option<TestExpression>,
    /// Open `case` statements, and whether a pattern is being read.
    cases: u32,
    awaiting_in: bool,
    in_pattern: bool,
}

impl Command {
    fn new(closer: Closer) -> Self {
        Self {
            closer,
            parens: 0,
            word: None,
            word_expands: false,
            word_quoted: false,
            position: 0,
            first: None,
            declaration: None,
            attributes_declared: false,
            evaluator: None,
            shell: None,
            shell_dash_c: false,
            shell_script_read: false,
            script: None,
            names: None,
            name_next: false,
            heredoc_operator: None,
            test: None,
            cases: 0,
            awaiting_in: false,
            in_pattern: false,
        }
    }

    fn push_char(&mut self, ch: char) {
        self.word.get_or_insert_with(String::new).push(ch);
    }

    fn mark_expanding(&mut self) {
        self.word.get_or_insert_with(String::new);
        self.word_expands = true;
    }

    /// A new simple command starts (after `;`, `&`, `|`, a newline, `(` or `)`).
    fn separate(&mut self) {
        self.position = 0;
        self.first = None;
        self.declaration = None;
        self.evaluator = None;
        self.shell = None;
        self.shell_dash_c = false;
        self.shell_script_read = false;
        self.script = None;
        self.names = None;
        self.name_next = false;
    }
}

/// A here-document waiting for its body, or being read.
#[derive(Debug, Clone)]
struct HereDocument {
    delimiter: String,
    strip_tabs: bool,
    quoted: bool,
    /// Fed to a shell or `ssh` as its script.
    evaluated: Option<String>,
}

#[derive(Debug)]
enum Frame {
    Command(Command),
    Single,
    AnsiC,
    Double,
    /// `${...}`, with the depth of braces inside it.
    Parameter(u32),
    /// `$((...))`, `((...))` or `$[...]`, with the depth of parentheses inside it.
    Arithmetic {
        parens: u32,
        bracket: bool,
    },
    Comment,
    /// The body of a here-document, with the current line so far.
    Body {
        document: HereDocument,
        line: String,
        line_expands: bool,
    },
}

#[derive(Debug)]
struct Lexer {
    /// The script's top level.
    root: Command,
    /// What is open inside it, innermost last.
    stack: Vec<Frame>,
    /// Here-documents whose operator was read, waiting for the end of the line.
    pending: std::collections::VecDeque<HereDocument>,
    /// Why BuildIt can no longer tell where text lands (shells disagree, or it is nested too deeply): every
    /// variable from here on is refused.
    lost: Option<&'static str>,
    /// The last piece of text ended with a `\` that escapes what comes next.
    dangling_backslash: bool,
    /// The character before the one being read.
    previous: Option<char>,
    /// A declaration earlier in the stage gave a variable an attribute (`declare -i n`).
    attributes_declared: bool,
    landings: Vec<Result<Landing, Refusal>>,
}

impl Default for Lexer {
    fn default() -> Self {
        Self {
            root: Command::new(Closer::End),
            stack: Vec::new(),
            pending: std::collections::VecDeque::new(),
            lost: None,
            dangling_backslash: false,
            previous: None,
            attributes_declared: false,
            landings: Vec::new(),
        }
    }
}

impl Lexer {
    fn text(&mut self, text: &str) {
        self.dangling_backslash = false;
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;
        while let Some(&ch) = chars.get(i) {
            if self.lost.is_some() {
                return;
            }
            let next = chars.get(i + 1).copied();
            let after = chars.get(i + 2).copied();
            if ch == '\\' && self.continues_lines() {
                match next {
                    Some('\n') => {
                        // A line continuation is removed before the shell reads tokens: one that splits
                        // `$((`, `((`, `<<` or `$(` would make BuildIt read them apart. In a here-document's
                        // body, dash and bash disagree on whether a continued line can end it.
                        if matches!(self.stack.last(), Some(Frame::Body { .. })) {
                            self.lost = Some(
                                "follows a line continuation in a here-document, which `sh` and `bash` read differently",
                            );
                        } else if matches!(self.previous, Some('$' | '(' | '<' | '[' | '{'))
                            || matches!(after, Some('(' | '<' | '[' | '{'))
                        {
                            self.lost =
                                Some("follows a line continuation that splits a shell token");
                        }
                        i += 2;
                        continue;
                    }
                    None => {
                        // The backslash escapes what follows this piece: the variable's reference.
                        self.dangling_backslash = true;
                        return;
                    }
                    Some(_) => {}
                }
            }
            let consumed = self.step(ch, next, after);
            if consumed > 0 {
                self.previous = chars.get(i + consumed - 1).copied();
            }
            i += consumed;
        }
    }

    /// Whether a backslash-newline is a line continuation here.
    fn continues_lines(&self) -> bool {
        match self.stack.last() {
            Some(Frame::Single | Frame::AnsiC | Frame::Comment) => false,
            Some(Frame::Body { document, .. }) => !document.quoted,
            _ => true,
        }
    }

    /// Opens a frame, unless BuildIt would then follow more than [`MAX_DEPTH`].
    fn push(&mut self, frame: Frame) {
        if self.stack.len() >= MAX_DEPTH {
            self.lost = Some("is nested too deeply for BuildIt to follow");
        } else {
            self.stack.push(frame);
        }
    }

    /// What the command leaves open at its end, if anything.
    fn unfinished(&self) -> Option<&'static str> {
        if self.lost.is_some() {
            return None;
        }
        if self.dangling_backslash {
            return Some("a trailing `\\`");
        }
        if !self.pending.is_empty() {
            return Some("a here-document");
        }
        match self.stack.last() {
            None | Some(Frame::Comment) => None,
            Some(Frame::Single | Frame::AnsiC) => Some("a single quote"),
            Some(Frame::Double) => Some("a double quote"),
            // The script puts a newline after every command: a last line that is the delimiter ends it.
            Some(Frame::Body {
                document,
                line,
                line_expands,
            }) => {
                let line = if document.strip_tabs {
                    line.trim_start_matches('\t')
                } else {
                    line.as_str()
                };
                (*line_expands || line != document.delimiter || self.stack.len() > 1)
                    .then_some("a here-document")
            }
            Some(Frame::Parameter(_)) => Some("`${`"),
            Some(Frame::Arithmetic { .. }) => Some("an arithmetic expansion"),
            Some(Frame::Command(command)) => match command.closer {
                Closer::Backquote => Some("a backquote"),
                _ => Some("`$(`"),
            },
        }
    }

    /// Handles `ch` (looking at the two characters after it where it must) and says how many characters were
    /// consumed: 0 when `ch` must be handled again in the context it closed.
    fn step(&mut self, ch: char, next: Option<char>, after: Option<char>) -> usize {
        let Some(frame) = self.stack.last_mut() else {
            return self.command_step(ch, next, after);
        };
        match frame {
            Frame::Single => {
                if ch == '\'' {
                    self.stack.pop();
                } else {
                    self.command_mut().push_char(ch);
                }
                1
            }
            Frame::AnsiC => match ch {
                '\\' => {
                    if next == Some('\'') {
                        self.lost = Some(
                            "follows a `$'...'` quote holding `\\'`, which `sh` and `bash` end in different places",
                        );
                    }
                    self.command_mut().mark_expanding();
                    2
                }
                '\'' => {
                    self.stack.pop();
                    1
                }
                _ => {
                    self.command_mut().push_char(ch);
                    1
                }
            },
            Frame::Comment => {
                if ch == '\n' || (ch == '`' && self.in_backquotes()) {
                    self.stack.pop();
                    // The newline also ends the command line; a backquote ends the backquoted command, which
                    // the shell cuts out before it reads comments.
                    0
                } else {
                    1
                }
            }
            Frame::Double => match ch {
                '"' => {
                    self.stack.pop();
                    1
                }
                '\\' => {
                    if let Some(escaped) = next {
                        self.command_mut().push_char(escaped);
                    }
                    2
                }
                '$' | '`' => self.expansion(ch, next, after, true),
                _ => {
                    self.command_mut().push_char(ch);
                    1
                }
            },
            Frame::Parameter(depth) => match ch {
                '{' => {
                    *depth += 1;
                    1
                }
                '}' => {
                    *depth -= 1;
                    if *depth == 0 {
                        self.stack.pop();
                    }
                    1
                }
                '\\' => 2,
                '"' => {
                    self.push(Frame::Double);
                    1
                }
                '\'' if !self.in_double_quotes() => {
                    self.push(Frame::Single);
                    1
                }
                '$' | '`' => self.expansion(ch, next, after, false),
                _ => 1,
            },
            Frame::Arithmetic { parens, bracket } => match ch {
                '(' if !*bracket => {
                    *parens += 1;
                    1
                }
                '[' if *bracket => {
                    *parens += 1;
                    1
                }
                ')' if !*bracket && *parens > 0 => {
                    *parens -= 1;
                    1
                }
                ']' if *bracket && *parens > 0 => {
                    *parens -= 1;
                    1
                }
                ')' if !*bracket && next == Some(')') => {
                    self.stack.pop();
                    2
                }
                ']' if *bracket => {
                    self.stack.pop();
                    1
                }
                '"' => {
                    self.push(Frame::Double);
                    1
                }
                '$' | '`' => self.expansion(ch, next, after, false),
                '\\' => 2,
                _ => 1,
            },
            Frame::Body { .. } => self.body_step(ch, next, after),
            Frame::Command(_) => self.command_step(ch, next, after),
        }
    }

    /// A character of a here-document's body.
    fn body_step(&mut self, ch: char, next: Option<char>, after: Option<char>) -> usize {
        let Some(Frame::Body {
            document,
            line,
            line_expands,
        }) = self.stack.last_mut()
        else {
            return 1;
        };
        if ch == '\n' {
            let text = if document.strip_tabs {
                line.trim_start_matches('\t')
            } else {
                line.as_str()
            };
            let ends = !*line_expands && text == document.delimiter;
            line.clear();
            *line_expands = false;
            if ends {
                self.stack.pop();
                self.next_body();
            }
            return 1;
        }
        if document.quoted {
            line.push(ch);
            return 1;
        }
        match ch {
            '\\' => {
                line.push(ch);
                if let Some(escaped) = next {
                    if escaped == '\n' {
                        // A continued line is joined to the next: it is not a delimiter line.
                        *line_expands = true;
                    } else {
                        line.push(escaped);
                    }
                }
                2
            }
            '$' | '`' => {
                *line_expands = true;
                self.expansion(ch, next, after, true)
            }
            _ => {
                line.push(ch);
                1
            }
        }
    }

    /// Starts the body of the next waiting here-document, if any.
    fn next_body(&mut self) {
        if let Some(document) = self.pending.pop_front() {
            self.push(Frame::Body {
                document,
                line: String::new(),
                line_expands: false,
            });
        }
    }

    /// `$` or a backquote at the start of `ch next after`, in a context where expansions happen. Outside
    /// double quotes (`quoted` false), `$'` opens an ANSI-C quote.
    fn expansion(
        &mut self,
        ch: char,
        next: Option<char>,
        after: Option<char>,
        quoted: bool,
    ) -> usize {
        if ch == '`' {
            if self.closes_backquote() {
                self.close_backquote();
            } else {
                self.command_mut().mark_expanding();
                self.push(Frame::Command(Command::new(Closer::Backquote)));
            }
            return 1;
        }
        match next {
            Some('(') if after == Some('(') => {
                self.command_mut().mark_expanding();
                self.push(Frame::Arithmetic {
                    parens: 0,
                    bracket: false,
                });
                3
            }
            Some('(') => {
                self.command_mut().mark_expanding();
                self.push(Frame::Command(Command::new(Closer::Paren)));
                2
            }
            Some('{') => {
                self.command_mut().mark_expanding();
                self.push(Frame::Parameter(1));
                2
            }
            Some('[') => {
                self.command_mut().mark_expanding();
                self.push(Frame::Arithmetic {
                    parens: 0,
                    bracket: true,
                });
                2
            }
            Some('\'') if !quoted => {
                let command = self.command_mut();
                command.mark_expanding();
                command.word_quoted = true;
                self.push(Frame::AnsiC);
                2
            }
            Some(c) if c.is_ascii_alphanumeric() || "_@*#?$!-".contains(c) => {
                let command = self.command_mut();
                command.push_char('$');
                command.push_char(c);
                command.mark_expanding();
                2
            }
            _ => {
                self.command_mut().push_char('$');
                1
            }
        }
    }

    /// Whether an unescaped backquote here closes a backquoted command rather than opening one.
    fn closes_backquote(&self) -> bool {
        for frame in self.stack.iter().rev() {
            match frame {
                Frame::Command(command) => return command.closer == Closer::Backquote,
                // Quotes inside backquotes end with them (a shell reports the unfinished quote).
                Frame::Double | Frame::Single | Frame::AnsiC | Frame::Parameter(_) => {}
                _ => return false,
            }
        }
        false
    }

    fn close_backquote(&mut self) {
        while let Some(frame) = self.stack.pop() {
            if matches!(&frame, Frame::Command(command) if command.closer == Closer::Backquote) {
                break;
            }
        }
        self.pending_across_close();
    }

    /// A here-document opened inside `$(...)` or backquotes that close on the same line: dash and bash read
    /// its body in different places.
    fn pending_across_close(&mut self) {
        if !self.pending.is_empty() {
            self.lost = Some(
                "follows a here-document opened inside `$(...)` that closes on the same line, which `sh` and `bash` read differently",
            );
        }
    }

    /// Whether a backquoted command is open (every variable inside one is refused).
    fn in_backquotes(&self) -> bool {
        self.stack.iter().any(
            |frame| matches!(frame, Frame::Command(command) if command.closer == Closer::Backquote),
        )
    }

    fn in_double_quotes(&self) -> bool {
        self.stack
            .iter()
            .rev()
            .find_map(|frame| match frame {
                Frame::Double => Some(true),
                Frame::Command(_) | Frame::Body { .. } => Some(false),
                _ => None,
            })
            .unwrap_or(false)
    }

    /// The innermost command context.
    fn command_mut(&mut self) -> &mut Command {
        let root = &mut self.root;
        self.stack
            .iter_mut()
            .rev()
            .find_map(|frame| match frame {
                Frame::Command(command) => Some(command),
                _ => None,
            })
            .unwrap_or(root)
    }

    /// The command context on top, if the top is one.
    fn top_command_mut(&mut self) -> Option<&mut Command> {
        match self.stack.last_mut() {
            None => Some(&mut self.root),
            Some(Frame::Command(command)) => Some(command),
            Some(_) => None,
        }
    }

    /// A character in a command context.
    fn command_step(&mut self, ch: char, next: Option<char>, after: Option<char>) -> usize {
        let Some(command) = self.top_command_mut() else {
            return 1;
        };
        match ch {
            '\\' => match next {
                // A continued line.
                Some('\n') => 2,
                Some(escaped) => {
                    command.push_char(escaped);
                    command.word_quoted = true;
                    2
                }
                None => 1,
            },
            '\'' => {
                command.word.get_or_insert_with(String::new);
                command.word_quoted = true;
                self.push(Frame::Single);
                1
            }
            '"' => {
                command.word.get_or_insert_with(String::new);
                command.word_quoted = true;
                self.push(Frame::Double);
                1
            }
            '$' | '`' => self.expansion(ch, next, after, false),
            '#' if command.word.is_none() => {
                self.push(Frame::Comment);
                1
            }
            // `((` where a word starts is arithmetic (`for ((`, `if((`, `time ((`): bash reads it so.
            '(' if next == Some('(') && !command.in_pattern => {
                // `if((` ends the word `if`: `(` is an operator character.
                self.end_word();
                self.push(Frame::Arithmetic {
                    parens: 0,
                    bracket: false,
                });
                2
            }
            ' ' | '\t' => {
                self.end_word();
                1
            }
            '\n' => {
                self.end_word();
                self.separate();
                if !self.pending.is_empty() {
                    self.next_body();
                }
                1
            }
            ';' => {
                self.end_word();
                self.separate();
                let Some(command) = self.top_command_mut() else {
                    return 1;
                };
                if next == Some(';') || next == Some('&') {
                    // `;;`, `;&`, `;;&`: the next `case` pattern follows.
                    command.in_pattern = command.cases > 0;
                    return if after == Some('&') { 3 } else { 2 };
                }
                1
            }
            '&' | '|' => {
                self.end_word();
                self.separate();
                1
            }
            '<' | '>' => {
                self.end_word();
                let Some(command) = self.top_command_mut() else {
                    return 1;
                };
                if next == Some('&') || (ch == '>' && next == Some('|')) {
                    // `2>&1`, `<&3`, `>|`: a redirection, not a separator.
                    return 2;
                }
                if ch == '<' && next == Some('<') {
                    if after == Some('<') {
                        // A here-string: an ordinary word, unless it is a shell's script.
                        if command.shell.is_some() && !command.shell_dash_c {
                            command.script = command.shell.clone();
                        } else if command.evaluator.is_some() {
                            command.script = command.evaluator.clone();
                        }
                        return 3;
                    }
                    let strip_tabs = after == Some('-');
                    command.heredoc_operator = Some(strip_tabs);
                    return if strip_tabs { 3 } else { 2 };
                }
                1
            }
            '(' => {
                self.end_word();
                let Some(command) = self.top_command_mut() else {
                    return 1;
                };
                if !command.in_pattern {
                    command.parens += 1;
                    command.separate();
                }
                1
            }
            ')' => {
                self.end_word();
                let Some(command) = self.top_command_mut() else {
                    return 1;
                };
                if command.in_pattern {
                    command.in_pattern = false;
                    command.separate();
                } else if command.parens > 0 {
                    command.parens -= 1;
                    command.separate();
                } else if command.closer == Closer::Paren {
                    self.stack.pop();
                    self.pending_across_close();
                }
                1
            }
            _ => {
                command.push_char(ch);
                1
            }
        }
    }

    fn separate(&mut self) {
        if let Some(command) = self.top_command_mut() {
            command.separate();
        }
    }

    /// Ends the current word of the command context on top.
    fn end_word(&mut self) {
        let Some(command) = self.top_command_mut() else {
            return;
        };
        let Some(word) = command.word.take() else {
            return;
        };
        let expands = std::mem::take(&mut command.word_expands);
        let quoted = std::mem::take(&mut command.word_quoted);
        if let Some(strip_tabs) = command.heredoc_operator.take() {
            // Standard input is the script of a shell named without `-c`, and of `ssh`.
            let evaluated = match (&command.shell, &command.evaluator) {
                (Some(shell), _) if !command.shell_dash_c => Some(shell.clone()),
                (_, Some(evaluator)) => Some(evaluator.clone()),
                _ => None,
            };
            if expands {
                self.lost = Some("follows a here-document whose delimiter holds an expansion");
            }
            self.pending.push_back(HereDocument {
                delimiter: word,
                strip_tabs,
                quoted,
                evaluated,
            });
            return;
        }
        let refused = command_word(command, &word, expands, quoted);
        if command.attributes_declared {
            self.attributes_declared = true;
        }
        for index in refused {
            if let Some(landing) = self.landings.get_mut(index) {
                *landing = Err(arithmetic_test_refusal());
            }
        }
    }

    /// A variable at the current place.
    fn variable(&mut self) {
        let index = self.landings.len();
        let landing = self.landing(index);
        self.landings.push(landing);
        self.dangling_backslash = false;
        if let Some(Frame::Body { line_expands, .. }) = self.stack.last_mut() {
            *line_expands = true;
        } else {
            self.command_mut().mark_expanding();
        }
    }

    fn landing(&mut self, index: usize) -> Result<Landing, Refusal> {
        if let Some(reason) = self.lost {
            return Err(refusal(
                reason,
                "write the command more plainly (no `\\'` in `$'...'`, no line continuation inside `$((`, `<<` or `$(`, less nesting), or use the value's environment variable `$BUILDIT_VALUE`",
            ));
        }
        if self.dangling_backslash {
            return Err(refusal(
                "directly follows a `\\`, which would escape what BuildIt puts there",
                "put the `\\` elsewhere, or write `\\\\` for a literal backslash",
            ));
        }
        for frame in &self.stack {
            match frame {
                Frame::Arithmetic { .. } => return Err(arithmetic_refusal()),
                Frame::Parameter(_) => {
                    return Err(refusal(
                        "is inside a parameter expansion `${...}`",
                        "use the value's environment variable there, e.g. `${TARGET:-$BUILDIT_VALUE}`",
                    ));
                }
                Frame::Body { document, .. } if document.quoted => {
                    return Err(refusal(
                        "is inside a quoted here-document, where nothing is substituted and the value would be pasted into the script",
                        "use an unquoted delimiter (`<<EOF`): BuildIt then passes the value through the environment",
                    ));
                }
                Frame::Body { document, .. } => {
                    if let Some(shell) = &document.evaluated {
                        return Err(refusal(
                            &format!("is inside a here-document that `{shell}` runs as shell code"),
                            "refer to the value's environment variable in the script (`\\$BUILDIT_VALUE` in the here-document, so that the outer shell leaves it alone)",
                        ));
                    }
                }
                Frame::Command(command) if command.closer == Closer::Backquote => {
                    return Err(refusal(
                        "is inside backquotes, whose text goes through another round of backslashes before it is read",
                        "write `$(...)` instead of backquotes",
                    ));
                }
                _ => {}
            }
        }
        let landing = match self.stack.last() {
            Some(Frame::Single) => Landing::SingleQuoted,
            Some(Frame::AnsiC) => Landing::AnsiCQuoted,
            Some(Frame::Double) => Landing::DoubleQuoted,
            Some(Frame::Comment) => return Ok(Landing::Comment),
            Some(Frame::Body { .. }) => Landing::HereDocument,
            _ => Landing::Unquoted,
        };
        // What a command does with its words matters at every depth: `eval "$(echo {branch})"` evaluates what
        // the inner command prints.
        let attributes_declared = self.attributes_declared;
        let innermost = std::ptr::from_ref(self.command_mut());
        let (root, frames) = (&mut self.root, &mut self.stack);
        let commands =
            std::iter::once(root).chain(frames.iter_mut().filter_map(|frame| match frame {
                Frame::Command(command) => Some(command),
                _ => None,
            }));
        let mut refused = None;
        for command in commands {
            let innermost = std::ptr::eq(std::ptr::from_ref(command), innermost);
            if let Some(test) = &mut command.test {
                if test.arithmetic {
                    refused.get_or_insert_with(arithmetic_test_refusal);
                }
                test.variables.push(index);
            }
            if refused.is_some() {
                continue;
            }
            if innermost && command.heredoc_operator.is_some() {
                refused = Some(refusal(
                    "is a here-document delimiter",
                    "write the delimiter as plain text, e.g. `<<EOF`",
                ));
            } else if let Some(evaluator) = &command.evaluator {
                refused = Some(refusal(
                    &format!(
                        "is an argument of `{evaluator}`, which runs its arguments as shell code"
                    ),
                    "refer to the value's environment variable inside the code instead (`eval 'echo \"$BUILDIT_VALUE\"'`): the code then reads it as data",
                ));
            } else if let Some(shell) = &command.script {
                refused = Some(refusal(
                    &format!(
                        "is inside the script given to `{shell}`, which runs it as shell code"
                    ),
                    &format!(
                        "pass the value as an argument after the script: `{shell} -c 'echo \"$1\"' {shell} {{branch}}`"
                    ),
                ));
            } else if let Some(taker) = &command.names {
                refused = Some(refusal(
                    &format!(
                        "is an argument of `{taker}`, which bash evaluates as arithmetic or as a name with an index (running `$(...)` inside it)"
                    ),
                    "check the value first, then use its environment variable `$BUILDIT_VALUE`",
                ));
            } else if command.name_next {
                refused = Some(refusal(
                    "is a variable name after `-v`, whose index bash evaluates (running `$(...)` inside it)",
                    "check the value first, then use its environment variable `$BUILDIT_VALUE`",
                ));
            } else if in_subscript(command.word.as_deref()) {
                refused = Some(refusal(
                    "is inside an array index, which bash evaluates as arithmetic",
                    "check that the value is a number, then use its environment variable: `a[BUILDIT_VALUE]=1`",
                ));
            } else if let Some(variable) = assigned(command.word.as_deref()) {
                if EVALUATED_VARIABLES.contains(&variable) {
                    refused = Some(refusal(
                        &format!(
                            "is assigned to `{variable}`, whose value the shell expands again"
                        ),
                        "set it from the environment variable inside single quotes, e.g. `PS4='+ $BUILDIT_VALUE '`, or leave the value out",
                    ));
                } else if attributes_declared || command.attributes_declared {
                    refused = Some(refusal(
                        "is assigned after a declaration gave a variable an attribute (`declare -i`), which bash may evaluate",
                        "check the value first, then use its environment variable `$BUILDIT_VALUE`",
                    ));
                }
            }
        }
        match refused {
            Some(refusal) => Err(refusal),
            None => Ok(landing),
        }
    }
}

/// The variable a word read so far assigns to (`PS4=`, `n+=`), if it is an assignment.
fn assigned(word: Option<&str>) -> Option<&str> {
    let word = word?;
    let end = word.find('=')?;
    let name = word.get(..end)?;
    let name = name.strip_suffix('+').unwrap_or(name);
    let is_name = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    is_name.then_some(name)
}

/// Whether a word read so far (`a[`, `[`) has an open array index: `a[{x}]=1`, `a=([{x}]=1)`.
fn in_subscript(word: Option<&str>) -> bool {
    let Some(word) = word else { return false };
    let Some(open) = word.find('[') else {
        return false;
    };
    let name = word.get(..open).unwrap_or_default();
    let is_name = name.is_empty()
        || (name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    is_name && !word.get(open..).unwrap_or_default().contains(']')
}

fn arithmetic_refusal() -> Refusal {
    refusal(
        "is inside shell arithmetic, which evaluates the value as an expression (bash even runs `$(...)` in an array index)",
        "check that the value is a number, then use its environment variable: `case $BUILDIT_VALUE in ''|*[!0-9]*) exit 1;; esac; echo $((BUILDIT_VALUE + 1))`",
    )
}

fn arithmetic_test_refusal() -> Refusal {
    refusal(
        "is inside `[[ ... ]]` with an arithmetic comparison, which evaluates its operands as expressions (bash runs `$(...)` in an array index)",
        "compare numbers with `[ ... -eq ... ]`, which does not evaluate them",
    )
}

fn refusal(reason: &str, help: &str) -> Refusal {
    Refusal {
        reason: reason.to_owned(),
        help: help.to_owned(),
    }
}

/// Takes a finished word of a simple command into account: keywords, evaluating commands, shells and their
/// scripts, `[[ ]]`. Returns the variables that an arithmetic operator in `[[ ]]` refuses after the fact.
fn command_word(command: &mut Command, word: &str, expands: bool, quoted: bool) -> Vec<usize> {
    let mut refused = Vec::new();
    let position = command.position;
    command.position += 1;
    command.name_next = false;
    let option = (word.starts_with('-') || word.starts_with('+')) && word.len() > 1;
    if command.script.is_some() {
        // Options between `-c` and the script (`sh -c -e 'script'`, `bash -c -- 'script'`) keep it coming.
        if !option || expands {
            command.script = None;
            command.shell_script_read = true;
        }
        return refused;
    }
    if word == "[[" && !quoted && command.test.is_none() {
        // At any place: `time -p [[`, `coproc [[`, `function f [[`.
        command.test = Some(TestExpression::default());
        return refused;
    }
    if let Some(test) = &mut command.test {
        if word == "]]" && !quoted {
            command.test = None;
        } else if ARITHMETIC_TESTS.contains(&word) {
            test.arithmetic = true;
            refused = std::mem::take(&mut test.variables);
        } else if matches!(word, "-v" | "-R") {
            command.name_next = true;
        }
        return refused;
    }
    let name = word.rsplit('/').next().unwrap_or(word);
    if let Some(shell) = command.shell.clone() {
        let short_cluster = word.starts_with('-')
            && !word.starts_with("--")
            && word.chars().skip(1).all(|c| c.is_ascii_alphabetic());
        if short_cluster && word.contains('c') {
            command.shell_dash_c = true;
            command.script = Some(format!("{shell} -c"));
        } else if expands && !command.shell_script_read {
            // `bash $OPTS "..."`: the expansion may hold `-c`; what follows may be the script.
            command.script = Some(shell);
        } else if !option {
            command.shell_script_read = true;
        }
    }
    if EVALUATORS.contains(&name) {
        command.evaluator.get_or_insert_with(|| name.to_owned());
    }
    if SHELLS.contains(&name) {
        command.shell = Some(name.to_owned());
        command.shell_dash_c = false;
        command.shell_script_read = false;
    }
    // Named anywhere: `builtin declare`, `command local`, `X=1 declare`, `builtin test`.
    if NAME_OPTIONS.contains(&name) || DECLARATIONS.contains(&name) {
        command.declaration.get_or_insert_with(|| name.to_owned());
    }
    if NAME_TAKERS.contains(&name) {
        command.names.get_or_insert_with(|| name.to_owned());
    }
    if matches!(word, "-v" | "-R") && command.position > 1 && command.first.is_some() {
        command.name_next = command.declaration.is_some();
    }
    if option
        && command
            .declaration
            .as_deref()
            .is_some_and(|declaration| DECLARATIONS.contains(&declaration))
        && word
            .chars()
            .skip(1)
            .any(|c| matches!(c, 'i' | 'n' | 'a' | 'A'))
    {
        command.names = command.declaration.clone();
        command.attributes_declared = true;
    }
    if position == 0 && expands && command.shell.is_none() {
        // `$SHELL -c "..."`, `"$BASH" -c "..."`: a command named by an expansion may be a shell.
        command.shell = Some(word.to_owned());
        command.shell_dash_c = false;
        command.shell_script_read = false;
    }
    if position == 0 {
        command.first = Some(name.to_owned());
    }
    if expands || quoted {
        return refused;
    }
    if position == 0 || command.awaiting_in {
        match word {
            "[[" if position == 0 => command.test = Some(TestExpression::default()),
            "case" if position == 0 => {
                command.cases += 1;
                command.awaiting_in = true;
            }
            "in" if command.awaiting_in => {
                command.awaiting_in = false;
                command.in_pattern = true;
            }
            "esac" => {
                command.cases = command.cases.saturating_sub(1);
                command.in_pattern = false;
            }
            _ => {}
        }
    }
    if RESERVED.contains(&word) && position == 0 {
        command.position = 0;
    }
    refused
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The landings of the variables in `text`, where `@` stands for a variable.
    fn land(text: &str) -> Vec<Result<Landing, ()>> {
        let mut pieces = Vec::new();
        for (index, part) in text.split('@').enumerate() {
            if index > 0 {
                pieces.push(Piece::Variable);
            }
            pieces.push(Piece::Text(part));
        }
        analyse(pieces, false)
            .landings
            .into_iter()
            .map(|landing| landing.map_err(|_| ()))
            .collect()
    }

    fn unfinished(text: &str) -> Option<&'static str> {
        analyse([Piece::Text(text)], false).unfinished
    }

    #[test]
    fn follows_quotes_comments_and_substitutions() {
        use Landing::*;
        assert_eq!(
            land("echo @ \"@\" '@'"),
            [Ok(Unquoted), Ok(DoubleQuoted), Ok(SingleQuoted)]
        );
        // An apostrophe in a comment opens nothing.
        assert_eq!(land("true # it's\necho @"), [Ok(Unquoted)]);
        // `#` inside a word is not a comment.
        assert_eq!(land("echo a#'@'"), [Ok(SingleQuoted)]);
        assert_eq!(
            land("echo \"$(echo @ \"@\")\""),
            [Ok(Unquoted), Ok(DoubleQuoted)]
        );
        // A `case` pattern's `)` does not close `$(`.
        assert_eq!(
            land("echo \"$(case x in x) echo;; esac) @\""),
            [Ok(DoubleQuoted)]
        );
        // Redirections are not separators; a shell's script is found past its options.
        assert_eq!(land("eval true 2>&1 @"), [Err(())]);
        assert_eq!(land("bash -o pipefail -c @"), [Err(())]);
        assert_eq!(land("bash script.sh @"), [Ok(Unquoted)]);
        assert_eq!(land("sh -c 'echo \"$1\"' sh @"), [Ok(Unquoted)]);
        // A new command after `;` does not inherit `eval`; one inside `$(...)` does.
        assert_eq!(land("eval true; echo @"), [Ok(Unquoted)]);
        assert_eq!(land("eval \"$(echo @)\""), [Err(())]);
        // Backquotes and a dangling backslash are refused.
        assert_eq!(land("x=`echo @`"), [Err(())]);
        assert_eq!(land("echo \\@"), [Err(())]);
    }

    #[test]
    fn here_documents_end_at_their_delimiter() {
        use Landing::*;
        assert_eq!(
            land("cat <<A <<'B'\n@\nA\n@\nB\necho @"),
            [Ok(HereDocument), Err(()), Ok(Unquoted)]
        );
        // A line holding a variable never ends the document, whatever the value.
        assert_eq!(
            land("cat <<EOF\n@\nEOF\n@"),
            [Ok(HereDocument), Ok(Unquoted)]
        );
        assert_eq!(
            land("cat <<-EOF\n\t@\n\tEOF\n'@'"),
            [Ok(HereDocument), Ok(SingleQuoted)]
        );
        // A shell reading its script from a here-document runs the value.
        assert_eq!(land("bash <<EOF\necho @\nEOF"), [Err(())]);
        assert_eq!(land("sh -c cat <<EOF\n@\nEOF"), [Ok(HereDocument)]);
    }

    #[test]
    fn arithmetic_and_names_are_refused_after_the_fact_too() {
        use Landing::*;
        assert_eq!(land("[[ @ -eq 1 ]] && echo @"), [Err(()), Ok(Unquoted)]);
        assert_eq!(land("[[ @ == x ]]"), [Ok(Unquoted)]);
        assert_eq!(land("if(( @ > 1 )); then :; fi"), [Err(())]);
        assert_eq!(
            land("a[@]=1; read @; declare -i n=@"),
            [Err(()), Err(()), Err(())]
        );
        assert_eq!(land("declare n=@"), [Ok(Unquoted)]);
    }

    #[test]
    fn tells_what_a_command_leaves_open() {
        assert_eq!(unfinished("cat <<EOF\nx\nEOF"), None);
        assert_eq!(unfinished("cat <<EOF"), Some("a here-document"));
        assert_eq!(unfinished("echo \"x"), Some("a double quote"));
        assert_eq!(unfinished("echo $(x"), Some("`$(`"));
        assert_eq!(unfinished("echo x # it's"), None);
    }

    #[test]
    fn deep_nesting_is_refused_not_followed() {
        let deep = format!("{}@", "\"$(".repeat(MAX_DEPTH));
        assert_eq!(land(&deep), [Err(())]);
    }
}
