//! Conditions over twin properties: the boolean expressions of interlocks, e.g.
//! `tank1/level < 95 and pump1/running`.
//!
//! Syntax (the PEG grammar is `condition.pest`, parsed with `pest`), loosest first:
//! - `a or b`, `a and b`, `not a`, parentheses;
//! - comparisons `<`, `<=`, `>`, `>=`, `==`, `!=` between numbers (numeric properties and
//!   literals such as `95`, `-2.5`, `1e3`), and `==`, `!=` between booleans;
//! - a boolean property on its own (`pump1/running`), `true`, `false`;
//! - a property is `<asset path>/<property>` (`line1/press3/oil_temperature`).
//!
//! [`parse`] checks syntax and types in one pass and reports every error with its byte offset in
//! the text, so the configuration can point at `file:line:col` inside the string. Numbers compare
//! as IEEE 754 doubles (integers above 2^53 lose precision); `==` between numbers is exact.

use pest::Parser as _;
use pest::iterators::Pair;

use super::spec::DataType;
use super::value::Value;

#[derive(pest_derive::Parser)]
#[grammar = "twin/condition.pest"]
struct Grammar;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparator {
    /// `<`
    Less,
    /// `<=`
    LessOrEqual,
    /// `>`
    Greater,
    /// `>=`
    GreaterOrEqual,
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
}

/// A parsed condition whose properties are `P`: paths (`String`) as parsed, ids once resolved
/// against a twin model ([`Condition::resolve`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Condition<P> {
    /// True when any is.
    Or(Vec<Condition<P>>),
    /// True when all are.
    And(Vec<Condition<P>>),
    /// True when the inner one is false.
    Not(Box<Condition<P>>),
    /// Two operands of the same kind compared.
    Compare(Box<Condition<P>>, Comparator, Box<Condition<P>>),
    /// A property's current value.
    Property(P),
    /// A number literal.
    Number(f64),
    /// `true` or `false`.
    Bool(bool),
}

/// A syntax or type error in a condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionError {
    /// Byte offset into the condition's text.
    pub offset: usize,
    /// What is wrong, lowercase.
    pub message: String,
}

/// The kind of value an operand has; `Unknown` after an error already reported (no cascade).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Number,
    Unknown,
}

/// Parses `text` and checks its types; `type_of` gives a property path's data type or says why
/// it cannot be used (no such property).
///
/// Errors: every syntax error (pest stops at the first) or every type error: an unknown
/// property, a string property, a number where a condition is expected, a comparison between a
/// number and a boolean, an order comparison (`<`) between booleans.
pub fn parse(
    text: &str,
    type_of: impl Fn(&str) -> Result<DataType, String>,
) -> Result<Condition<String>, Vec<ConditionError>> {
    let mut pairs = Grammar::parse(Rule::condition, text).map_err(|error| {
        let offset = match error.location {
            pest::error::InputLocation::Pos(at) => at,
            pest::error::InputLocation::Span((at, _)) => at,
        };
        let error = error.renamed_rules(describe);
        vec![ConditionError {
            offset,
            message: error.variant.message().into_owned(),
        }]
    })?;
    let top = pairs
        .next()
        .and_then(|condition| condition.into_inner().next())
        .expect("the grammar's `condition` holds one disjunction");
    let mut checker = Checker {
        type_of,
        errors: Vec::new(),
    };
    let offset = top.as_span().start();
    let (condition, kind) = checker.build(top);
    checker.boolean(kind, offset, text.trim());
    if checker.errors.is_empty() {
        Ok(condition)
    } else {
        Err(checker.errors)
    }
}

/// How a grammar rule is named in an error message.
fn describe(rule: &Rule) -> String {
    match rule {
        Rule::path => "a property path (`asset/property`)",
        Rule::number => "a number",
        Rule::boolean => "`true` or `false`",
        Rule::group => "`(`",
        Rule::not => "`not`",
        Rule::and => "`and`",
        Rule::or => "`or`",
        Rule::comparator => "a comparison (`<`, `<=`, `>`, `>=`, `==`, `!=`)",
        Rule::EOI => "the end of the condition",
        _ => "a condition",
    }
    .to_owned()
}

struct Checker<F> {
    type_of: F,
    errors: Vec<ConditionError>,
}

impl<F: Fn(&str) -> Result<DataType, String>> Checker<F> {
    /// Requires `kind` to be boolean where a condition is expected.
    fn boolean(&mut self, kind: Kind, offset: usize, what: &str) {
        if kind == Kind::Number {
            self.errors.push(ConditionError {
                offset,
                message: format!(
                    "`{what}` is a number, not a condition: compare it (e.g. `{what} < 95`)"
                ),
            });
        }
    }

    fn build(&mut self, pair: Pair<'_, Rule>) -> (Condition<String>, Kind) {
        match pair.as_rule() {
            Rule::disjunction | Rule::conjunction => {
                let is_or = pair.as_rule() == Rule::disjunction;
                let mut parts = Vec::new();
                for inner in pair.into_inner() {
                    if matches!(inner.as_rule(), Rule::or | Rule::and) {
                        continue;
                    }
                    parts.push(inner);
                }
                if parts.len() == 1 {
                    return self.build(parts.remove(0));
                }
                let mut built = Vec::with_capacity(parts.len());
                for part in parts {
                    let (offset, text) = (part.as_span().start(), part.as_str().trim().to_owned());
                    let (condition, kind) = self.build(part);
                    self.boolean(kind, offset, &text);
                    built.push(condition);
                }
                let condition = if is_or {
                    Condition::Or(built)
                } else {
                    Condition::And(built)
                };
                (condition, Kind::Bool)
            }
            Rule::negation => {
                let mut inner = pair.into_inner();
                let first = inner.next().expect("a negation holds a term");
                if first.as_rule() != Rule::not {
                    return self.build(first);
                }
                let operand = inner.next().expect("`not` is followed by a negation");
                let (offset, text) = (
                    operand.as_span().start(),
                    operand.as_str().trim().to_owned(),
                );
                let (condition, kind) = self.build(operand);
                self.boolean(kind, offset, &text);
                (Condition::Not(Box::new(condition)), Kind::Bool)
            }
            Rule::comparison => {
                let mut inner = pair.into_inner();
                let left = inner.next().expect("a comparison starts with an operand");
                let Some(comparator) = inner.next() else {
                    return self.build(left);
                };
                let right = inner
                    .next()
                    .expect("a comparator is followed by an operand");
                let left_text = left.as_str().trim().to_owned();
                let right_text = right.as_str().trim().to_owned();
                let (left, left_kind) = self.build(left);
                let (right, right_kind) = self.build(right);
                let op = match comparator.as_str() {
                    "<" => Comparator::Less,
                    "<=" => Comparator::LessOrEqual,
                    ">" => Comparator::Greater,
                    ">=" => Comparator::GreaterOrEqual,
                    "==" => Comparator::Equal,
                    _ => Comparator::NotEqual,
                };
                let offset = comparator.as_span().start();
                match (left_kind, right_kind) {
                    (Kind::Unknown, _) | (_, Kind::Unknown) | (Kind::Number, Kind::Number) => {}
                    (Kind::Bool, Kind::Bool) => {
                        if !matches!(op, Comparator::Equal | Comparator::NotEqual) {
                            self.errors.push(ConditionError {
                                offset,
                                message: format!(
                                    "`{left_text}` and `{right_text}` are booleans: they compare only with `==` or `!=`"
                                ),
                            });
                        }
                    }
                    _ => self.errors.push(ConditionError {
                        offset,
                        message: format!(
                            "cannot compare `{left_text}` with `{right_text}`: one is a number, the other a boolean"
                        ),
                    }),
                }
                (
                    Condition::Compare(Box::new(left), op, Box::new(right)),
                    Kind::Bool,
                )
            }
            Rule::group => {
                let inner = pair
                    .into_inner()
                    .next()
                    .expect("a group holds a disjunction");
                self.build(inner)
            }
            Rule::path => {
                let path = pair.as_str();
                let kind = match (self.type_of)(path) {
                    Ok(DataType::Bool) => Kind::Bool,
                    Ok(data_type) if data_type.is_numeric() => Kind::Number,
                    Ok(_) => {
                        self.errors.push(ConditionError {
                            offset: pair.as_span().start(),
                            message: format!(
                                "`{path}` is a string property: a condition compares numbers and booleans"
                            ),
                        });
                        Kind::Unknown
                    }
                    Err(why) => {
                        self.errors.push(ConditionError {
                            offset: pair.as_span().start(),
                            message: why,
                        });
                        Kind::Unknown
                    }
                };
                (Condition::Property(path.to_owned()), kind)
            }
            Rule::number => match pair.as_str().parse::<f64>() {
                Ok(number) if number.is_finite() => (Condition::Number(number), Kind::Number),
                _ => {
                    self.errors.push(ConditionError {
                        offset: pair.as_span().start(),
                        message: format!("`{}` is not a finite number", pair.as_str()),
                    });
                    (Condition::Number(0.0), Kind::Unknown)
                }
            },
            Rule::boolean => (Condition::Bool(pair.as_str() == "true"), Kind::Bool),
            other => unreachable!("rule {other:?} is not an operand"),
        }
    }
}

/// An operand's value during evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Operand {
    Bool(bool),
    Number(f64),
}

impl<P> Condition<P> {
    /// The same condition with each property mapped by `f` (paths to ids).
    ///
    /// Errors: the first error `f` returns.
    pub fn resolve<Q, E>(&self, f: &mut dyn FnMut(&P) -> Result<Q, E>) -> Result<Condition<Q>, E> {
        Ok(match self {
            Self::Or(parts) => Condition::Or(
                parts
                    .iter()
                    .map(|part| part.resolve(f))
                    .collect::<Result<_, E>>()?,
            ),
            Self::And(parts) => Condition::And(
                parts
                    .iter()
                    .map(|part| part.resolve(f))
                    .collect::<Result<_, E>>()?,
            ),
            Self::Not(inner) => Condition::Not(Box::new(inner.resolve(f)?)),
            Self::Compare(left, op, right) => {
                Condition::Compare(Box::new(left.resolve(f)?), *op, Box::new(right.resolve(f)?))
            }
            Self::Property(p) => Condition::Property(f(p)?),
            Self::Number(n) => Condition::Number(*n),
            Self::Bool(b) => Condition::Bool(*b),
        })
    }

    /// Every property the condition reads, in text order (repeats included).
    pub fn properties(&self) -> Vec<&P> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a P>) {
        match self {
            Self::Or(parts) | Self::And(parts) => parts.iter().for_each(|p| p.collect(out)),
            Self::Not(inner) => inner.collect(out),
            Self::Compare(left, _, right) => {
                left.collect(out);
                right.collect(out);
            }
            Self::Property(p) => out.push(p),
            Self::Number(_) | Self::Bool(_) => {}
        }
    }

    /// Evaluates the condition with each property's value from `value` (the caller has checked
    /// that every input is Good). Fail safe: a missing value, one of the wrong kind, or a number
    /// that is not finite is unknown, and an unknown anywhere makes the whole condition false,
    /// however `not`, `and` and `or` combine it (`not (a and b)` with `a` unknown is false, not
    /// true; `a or true` with `a` unknown is false too).
    pub fn evaluate(&self, value: &impl Fn(&P) -> Option<Value>) -> bool {
        self.operand(value) == Some(Operand::Bool(true))
    }

    /// The operand's value, `None` when anything under it is unknown.
    fn operand(&self, value: &impl Fn(&P) -> Option<Value>) -> Option<Operand> {
        let truth = |part: &Self| match part.operand(value)? {
            Operand::Bool(b) => Some(b),
            Operand::Number(_) => None,
        };
        Some(match self {
            // Every part is evaluated (no short cut), so an unknown one is never skipped.
            Self::Or(parts) => Operand::Bool(
                parts
                    .iter()
                    .map(truth)
                    .collect::<Option<Vec<bool>>>()?
                    .contains(&true),
            ),
            Self::And(parts) => Operand::Bool(
                parts
                    .iter()
                    .map(truth)
                    .collect::<Option<Vec<bool>>>()?
                    .iter()
                    .all(|b| *b),
            ),
            Self::Not(inner) => match inner.operand(value)? {
                Operand::Bool(b) => Operand::Bool(!b),
                Operand::Number(_) => return None,
            },
            Self::Compare(left, op, right) => {
                let ordering = match (left.operand(value)?, right.operand(value)?) {
                    (Operand::Number(a), Operand::Number(b)) => a.partial_cmp(&b)?,
                    (Operand::Bool(a), Operand::Bool(b)) => a.cmp(&b),
                    _ => return None,
                };
                Operand::Bool(match op {
                    Comparator::Less => ordering.is_lt(),
                    Comparator::LessOrEqual => ordering.is_le(),
                    Comparator::Greater => ordering.is_gt(),
                    Comparator::GreaterOrEqual => ordering.is_ge(),
                    Comparator::Equal => ordering.is_eq(),
                    Comparator::NotEqual => ordering.is_ne(),
                })
            }
            Self::Property(p) => match value(p)? {
                Value::Bool(b) => Operand::Bool(b),
                other => Operand::Number(other.as_f64().filter(|v| v.is_finite())?),
            },
            Self::Number(n) => Operand::Number(*n),
            Self::Bool(b) => Operand::Bool(*b),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn types(path: &str) -> Result<DataType, String> {
        match path {
            "tank1/level" | "tank1/temperature" => Ok(DataType::Float),
            "pump1/running" | "tank1/door_open" => Ok(DataType::Bool),
            "pump1/name" => Ok(DataType::String),
            other => Err(format!("there is no property `{other}`")),
        }
    }

    fn eval(text: &str, values: &[(&str, Value)]) -> bool {
        let values: HashMap<String, Value> = values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        parse(text, types)
            .unwrap()
            .evaluate(&|p: &String| values.get(p).cloned())
    }

    #[test]
    fn precedence_is_or_then_and_then_not_then_comparison() {
        let condition = parse(
            "not tank1/door_open and tank1/level < 95 or pump1/running",
            types,
        )
        .unwrap();
        let Condition::Or(parts) = &condition else {
            panic!("{condition:?}")
        };
        assert!(matches!(&parts[0], Condition::And(and) if matches!(and[0], Condition::Not(_))));
        assert_eq!(parts[1], Condition::Property("pump1/running".into()));
        assert_eq!(
            condition.properties(),
            ["tank1/door_open", "tank1/level", "pump1/running"]
        );
    }

    #[test]
    fn evaluation_follows_the_values() {
        let running = |b| ("pump1/running", Value::Bool(b));
        let level = |v| ("tank1/level", Value::Float(v));
        let text = "tank1/level < 95 and pump1/running";
        assert!(eval(text, &[level(94.9), running(true)]));
        assert!(!eval(text, &[level(95.0), running(true)]));
        assert!(!eval(text, &[level(10.0), running(false)]));
        assert!(eval("not (tank1/level >= 95) or false", &[level(94.0)]));
        assert!(eval("pump1/running == false", &[running(false)]));
        assert!(eval("tank1/level != -2.5e1", &[level(-24.0)]));
        assert!(eval(
            "tank1/level <= tank1/temperature",
            &[level(3.0), ("tank1/temperature", Value::Int(3))]
        ));
        // A value that is missing makes the whole condition false, not an error.
        assert!(!eval("not tank1/level > 1", &[]));
    }

    #[test]
    fn an_unknown_input_makes_the_condition_false_however_it_is_combined() {
        let running = ("pump1/running", Value::Bool(true));
        let door = ("tank1/door_open", Value::Bool(false));
        // Each of these is true with `tank1/level` at 50; unknown, each must be false.
        let cases = [
            "not (tank1/level > 90 and pump1/running)",
            "not (tank1/level > 90 or tank1/door_open)",
            "not (not (tank1/level < 90))",
            "tank1/level < 90 or pump1/running",
            "pump1/running or tank1/level < 90",
            "not (tank1/door_open and tank1/level > 90)",
            "not tank1/door_open and not (tank1/level > 90)",
        ];
        let unknown = [
            ("missing", None),
            ("+infinity", Some(Value::Float(f64::INFINITY))),
            ("-infinity", Some(Value::Float(f64::NEG_INFINITY))),
            ("NaN", Some(Value::Float(f64::NAN))),
            ("text", Some(Value::String("50".into()))),
        ];
        for text in cases {
            assert!(
                eval(
                    text,
                    &[
                        running.clone(),
                        door.clone(),
                        ("tank1/level", Value::Float(50.0))
                    ]
                ),
                "`{text}` with a known level"
            );
            for (what, level) in &unknown {
                let mut values = vec![running.clone(), door.clone()];
                values.extend(level.clone().map(|v| ("tank1/level", v)));
                assert!(!eval(text, &values), "`{text}` with the level {what}");
            }
        }
    }

    #[test]
    fn syntax_errors_give_the_offset_and_what_was_expected() {
        let errors = parse("tank1/level < and pump1/running", types).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].offset, 14);
        assert!(errors[0].message.contains("a property path"), "{errors:?}");
        assert!(errors[0].message.contains("a number"), "{errors:?}");
        let errors = parse("tank1/level < 95 pump1/running", types).unwrap_err();
        assert_eq!(errors[0].offset, 17, "{errors:?}");
        let errors = parse("(tank1/level < 95", types).unwrap_err();
        assert_eq!(errors[0].offset, 17, "{errors:?}");
    }

    #[test]
    fn type_errors_are_all_reported_with_their_offsets() {
        let errors = parse(
            "tank1/level and pump1/running < 3 and tank9/x and pump1/name == 1 and pump1/running > true",
            types,
        )
        .unwrap_err();
        let found: Vec<(usize, &str)> = errors
            .iter()
            .map(|e| (e.offset, e.message.as_str()))
            .collect();
        assert_eq!(found.len(), 5, "{found:#?}");
        assert_eq!(found[0].0, 0);
        assert!(found[0].1.contains("is a number, not a condition"));
        assert_eq!(found[1].0, 30);
        assert!(found[1].1.contains("one is a number, the other a boolean"));
        assert_eq!(
            (found[2].0, found[2].1),
            (38, "there is no property `tank9/x`")
        );
        assert_eq!(found[3].0, 50);
        assert!(found[3].1.contains("string property"));
        assert_eq!(found[4].0, 84);
        assert!(found[4].1.contains("only with `==` or `!=`"));
        // A lone number is not a condition either.
        assert!(
            parse("95", types).unwrap_err()[0]
                .message
                .contains("is a number")
        );
    }

    #[test]
    fn keywords_need_a_word_boundary_and_paths_may_hold_them() {
        let condition = parse("not/x == 1", |_| Ok(DataType::Float)).unwrap();
        assert_eq!(
            condition,
            Condition::Compare(
                Box::new(Condition::Property("not/x".into())),
                Comparator::Equal,
                Box::new(Condition::Number(1.0))
            )
        );
        assert!(parse("pump1/running andpump1/running", types).is_err());
    }

    #[test]
    fn resolving_maps_every_property() {
        let ids: HashMap<&str, u32> = [("tank1/level", 7), ("pump1/running", 9)].into();
        let condition = parse("tank1/level < 95 and pump1/running", types).unwrap();
        let resolved = condition
            .resolve(&mut |p: &String| ids.get(p.as_str()).copied().ok_or(()))
            .unwrap();
        assert_eq!(resolved.properties(), [&7, &9]);
    }
}
