//! Splitting a `command` string into container `args`, as Python's
//! `shlex.split(command, posix=True)` does (what Prefect's `command_from_string`
//! uses on Linux): whitespace separates words; `'...'` is literal; inside `"..."`
//! a backslash escapes only `"` and `\`; outside quotes a backslash escapes any
//! character; `''` is an empty word; `#` is an ordinary character.

use crate::error::ManifestError;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between words.
    Between,
    /// Inside an unquoted part of a word.
    Word,
    Single,
    Double,
}

/// Splits `command`; `field` names the job variable in errors.
pub fn split_command(field: &str, command: &str) -> Result<Vec<String>, ManifestError> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut state = State::Between;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match state {
            State::Between | State::Word => match c {
                ' ' | '\t' | '\r' | '\n' => {
                    if state == State::Word {
                        words.push(std::mem::take(&mut current));
                        state = State::Between;
                    }
                }
                '\'' => state = State::Single,
                '"' => state = State::Double,
                '\\' => {
                    let escaped = chars
                        .next()
                        .ok_or_else(|| unfinished(field, "no escaped character after '\\'"))?;
                    current.push(escaped);
                    state = State::Word;
                }
                other => {
                    current.push(other);
                    state = State::Word;
                }
            },
            State::Single => match c {
                '\'' => state = State::Word,
                other => current.push(other),
            },
            State::Double => match c {
                '"' => state = State::Word,
                '\\' => {
                    let escaped = chars
                        .next()
                        .ok_or_else(|| unfinished(field, "no closing quotation"))?;
                    if escaped != '"' && escaped != '\\' {
                        current.push('\\');
                    }
                    current.push(escaped);
                }
                other => current.push(other),
            },
        }
    }
    match state {
        State::Single | State::Double => Err(unfinished(field, "no closing quotation")),
        State::Word => {
            words.push(current);
            Ok(words)
        }
        State::Between => Ok(words),
    }
}

fn unfinished(field: &str, reason: &str) -> ManifestError {
    ManifestError::JobVariable {
        field: field.to_string(),
        reason: format!("the command string cannot be split into arguments: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<String> {
        split_command("command", text).unwrap_or_else(|err| panic!("{text}: {err}"))
    }

    #[test]
    fn splits_like_python_shlex() {
        assert_eq!(
            split("prefect flow-run execute"),
            ["prefect", "flow-run", "execute"]
        );
        assert_eq!(split("  python  -m 'a b'  "), ["python", "-m", "a b"]);
        assert_eq!(
            split(r#"echo "a \"q\" \n \\ b""#),
            ["echo", r#"a "q" \n \ b"#]
        );
        assert_eq!(split(r"a\ b c\'d"), ["a b", "c'd"]);
        assert_eq!(split("a '' b"), ["a", "", "b"]);
        assert_eq!(split("x#y # z"), ["x#y", "#", "z"]);
        assert_eq!(split("pre'mid'\"post\""), ["premidpost"]);
        assert!(split("").is_empty());
    }

    #[test]
    fn unbalanced_quotes_are_errors() {
        let err = split_command("job_variables.command", "echo 'oops").expect_err("unbalanced");
        assert_eq!(err.field(), "job_variables.command");
        assert!(err.to_string().contains("no closing quotation"), "{err}");
        assert!(split_command("c", "trailing\\").is_err());
    }
}
