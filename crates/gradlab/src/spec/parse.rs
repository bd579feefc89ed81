//! Recursive-descent parser for spec strings.

use super::{Spec, Value};
use crate::Error;

/// Parses a spec string such as `adam(lr=0.001, betas=(0.9, 0.999))`.
///
/// Errors name the problem and the column (1-based) where it was found.
pub fn parse(text: &str) -> Result<Spec, Error> {
    let mut p = Parser {
        text,
        chars: text.char_indices().collect(),
        pos: 0,
        depth: 0,
    };
    p.skip_ws();
    let spec = p.spec()?;
    p.skip_ws();
    if p.pos < p.chars.len() {
        return Err(p.error("unexpected text after the end of the spec"));
    }
    Ok(spec)
}

struct Parser<'a> {
    text: &'a str,
    chars: Vec<(usize, char)>,
    pos: usize,
    depth: usize,
}

/// Deepest nesting of specs, tuples and lists accepted (guards the stack).
const MAX_DEPTH: usize = 32;

impl Parser<'_> {
    fn error(&self, message: impl Into<String>) -> Error {
        Error::Spec {
            spec: self.text.to_string(),
            column: self.pos + 1,
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|&(_, c)| c)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char, context: &str) -> Result<(), Error> {
        if self.eat(c) {
            Ok(())
        } else {
            let found = match self.peek() {
                Some(f) => format!("'{f}'"),
                None => "the end of the spec".to_string(),
            };
            Err(self.error(format!("expected '{c}' {context}, found {found}")))
        }
    }

    fn identifier(&mut self) -> Option<String> {
        self.skip_ws();
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        {
            if self.pos == start
                && !self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            {
                break;
            }
            self.pos += 1;
        }
        (self.pos > start).then(|| self.slice(start, self.pos))
    }

    fn slice(&self, start: usize, end: usize) -> String {
        let from = self.chars[start].0;
        let to = self.chars.get(end).map_or(self.text.len(), |&(i, _)| i);
        self.text[from..to].to_string()
    }

    fn spec(&mut self) -> Result<Spec, Error> {
        let Some(name) = self.identifier() else {
            return Err(self.error("expected a name such as 'adam'"));
        };
        let mut spec = Spec::new(name);
        if self.eat('(') {
            self.arguments(&mut spec)?;
        }
        Ok(spec)
    }

    fn arguments(&mut self, spec: &mut Spec) -> Result<(), Error> {
        if self.eat(')') {
            return Ok(());
        }
        loop {
            self.skip_ws();
            let arg_start = self.pos;
            let key = self.keyword();
            if key.is_none() && spec.args.iter().any(|(k, _)| k.is_some()) {
                return Err(self.error("a positional argument cannot follow keyword arguments"));
            }
            if let Some(k) = &key {
                if spec.get(k).is_some() {
                    self.pos = arg_start;
                    return Err(self.error(format!("argument '{k}' is given twice")));
                }
            }
            let value = self.value()?;
            spec.args.push((key, value));
            if self.eat(')') {
                return Ok(());
            }
            self.expect(',', &format!("or ')' in the arguments of '{}'", spec.name))?;
            if self.eat(')') {
                return Ok(());
            }
        }
    }

    /// Reads `key =` if present; otherwise leaves the position unchanged.
    fn keyword(&mut self) -> Option<String> {
        let save = self.pos;
        if let Some(k) = self.identifier() {
            if self.eat('=') {
                return Some(k);
            }
        }
        self.pos = save;
        None
    }

    fn value(&mut self) -> Result<Value, Error> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(format!("nested more than {MAX_DEPTH} levels deep")));
        }
        self.depth += 1;
        let v = self.value_inner();
        self.depth -= 1;
        v
    }

    fn value_inner(&mut self) -> Result<Value, Error> {
        self.skip_ws();
        match self.peek() {
            None => Err(self.error("expected a value, found the end of the spec")),
            Some('(') => {
                self.pos += 1;
                Ok(Value::Tuple(self.items(')')?))
            }
            Some('[') => {
                self.pos += 1;
                Ok(Value::List(self.items(']')?))
            }
            Some(c) if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => self.number(),
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let save = self.pos;
                let word = self.identifier().unwrap_or_default();
                match word.as_str() {
                    "true" => return Ok(Value::Bool(true)),
                    "false" => return Ok(Value::Bool(false)),
                    "inf" => return Ok(Value::Num(f64::INFINITY)),
                    _ => {}
                }
                self.skip_ws();
                if self.peek() == Some('(') {
                    self.pos = save;
                    Ok(Value::Spec(self.spec()?))
                } else {
                    Ok(Value::Word(word))
                }
            }
            Some(c) => Err(self.error(format!(
                "unexpected character '{c}' where a value was expected"
            ))),
        }
    }

    fn items(&mut self, close: char) -> Result<Vec<Value>, Error> {
        let mut items = Vec::new();
        if self.eat(close) {
            return Ok(items);
        }
        loop {
            items.push(self.value()?);
            if self.eat(close) {
                return Ok(items);
            }
            self.expect(',', &format!("or '{close}'"))?;
            if self.eat(close) {
                return Ok(items);
            }
        }
    }

    fn number(&mut self) -> Result<Value, Error> {
        let start = self.pos;
        if matches!(self.peek(), Some('-' | '+')) {
            self.pos += 1;
        }
        if self.peek() == Some('i') {
            if let Some(word) = self.identifier() {
                if word == "inf" {
                    let neg = self.chars[start].1 == '-';
                    return Ok(Value::Num(if neg {
                        f64::NEG_INFINITY
                    } else {
                        f64::INFINITY
                    }));
                }
            }
            self.pos = start;
            return Err(self.error("malformed number"));
        }
        while let Some(c) = self.peek() {
            let exponent_sign = (c == '-' || c == '+')
                && self.pos > start
                && matches!(self.chars[self.pos - 1].1, 'e' | 'E');
            if c.is_ascii_digit() || c == '.' || c == 'e' || c == 'E' || c == '_' || exponent_sign {
                self.pos += 1;
            } else {
                break;
            }
        }
        let text = self.slice(start, self.pos).replace('_', "");
        match text.parse::<f64>() {
            Ok(x) if x.is_infinite() => {
                self.pos = start;
                Err(self.error(format!(
                    "number '{text}' overflows a 64-bit float (largest {:e}; write inf for \
                     infinity)",
                    f64::MAX
                )))
            }
            Ok(x) => Ok(Value::Num(x)),
            Err(_) => {
                self.pos = start;
                Err(self.error(format!("malformed number '{text}'")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_specs_and_values() {
        let s = parse("lookahead(adam(lr=0.02, betas=(0.9, 0.99)), k=5, alpha=0.5)").unwrap();
        assert_eq!(s.name, "lookahead");
        assert_eq!(s.args.len(), 3);
        let Value::Spec(inner) = &s.args[0].1 else {
            panic!()
        };
        assert_eq!(inner.name, "adam");
        assert_eq!(inner.get("betas"), Some(&Value::from((0.9, 0.99))));
        let m = parse("multistep(milestones=[30, 80], gamma=1e-1)").unwrap();
        assert_eq!(
            m.get("milestones"),
            Some(&Value::List(vec![Value::Num(30.0), Value::Num(80.0)]))
        );
        assert_eq!(m.get("gamma"), Some(&Value::Num(0.1)));
        let c = parse("cyclic(mode=triangular2, cycle_momentum=false)").unwrap();
        assert_eq!(c.get("mode"), Some(&Value::Word("triangular2".into())));
        assert_eq!(c.get("cycle_momentum"), Some(&Value::Bool(false)));
        assert_eq!(parse("sgd").unwrap(), Spec::new("sgd"));
    }

    #[test]
    fn prints_canonically() {
        let s = parse("  adam( lr = 1e-3 ,betas=( 0.9,0.999 ), amsgrad = true ) ").unwrap();
        assert_eq!(
            s.to_string(),
            "adam(lr=0.001, betas=(0.9, 0.999), amsgrad=true)"
        );
        let e = parse("adam(eps=1e-8, lr=-2.5E+3)").unwrap();
        assert_eq!(e.to_string(), "adam(eps=1e-8, lr=-2500)");
    }

    #[test]
    fn errors_name_the_column() {
        let cases = [
            ("adam(lr=0.1", "or ')'", 12),
            ("adam(lr=)", "where a value was expected", 9),
            ("adam(lr=0.1.2)", "malformed number", 9),
            ("adam(lr=0.1) x", "unexpected text", 14),
            ("(lr=1)", "expected a name", 1),
            ("adam(lr=1, lr=2)", "given twice", 12),
            ("adam(lr=1, 3)", "positional argument", 12),
            ("adam(lr=#)", "unexpected character '#'", 9),
        ];
        let deep = format!("a(x={}1{})", "(".repeat(200), ")".repeat(200));
        assert!(parse(&deep)
            .unwrap_err()
            .to_string()
            .contains("nested more than"));
        for (text, message, column) in cases {
            match parse(text) {
                Err(Error::Spec {
                    column: c,
                    message: m,
                    ..
                }) => {
                    assert!(m.contains(message), "{text}: {m}");
                    assert_eq!(c, column, "{text}: {m}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
