//! The XML answers of the EC2 and S3 APIs, parsed with quick-xml into a
//! small element tree that callers query by element name.

use quick_xml::events::Event;
use quick_xml::Reader;

/// One element: its local name (namespace prefix dropped), its text and
/// its children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// The first direct child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The text of the direct child `name`.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// The `<item>` children of the direct child `set` (EC2's lists).
    pub fn items(&self, set: &str) -> Vec<&Element> {
        self.child(set)
            .map(|s| s.children.iter().filter(|c| c.name == "item").collect())
            .unwrap_or_default()
    }

    /// The first element named `name` anywhere below (depth first).
    pub fn find(&self, name: &str) -> Option<&Element> {
        for c in &self.children {
            if c.name == name {
                return Some(c);
            }
            if let Some(f) = c.find(name) {
                return Some(f);
            }
        }
        None
    }

    /// An EC2 `tagSet` as key/value pairs.
    pub fn tags(&self) -> Vec<(String, String)> {
        self.items("tagSet")
            .into_iter()
            .map(|t| {
                (
                    t.child_text("key").unwrap_or_default().to_string(),
                    t.child_text("value").unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

/// A parsed document.
#[derive(Debug, Clone)]
pub struct Doc {
    pub root: Element,
}

impl Doc {
    /// `None` when the text is not well-formed XML.
    pub fn parse(text: &str) -> Option<Doc> {
        let mut reader = Reader::from_str(text);
        let mut stack: Vec<Element> = vec![Element::default()];
        loop {
            match reader.read_event() {
                Ok(Event::Start(e)) => stack.push(Element {
                    name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                    ..Element::default()
                }),
                Ok(Event::Empty(e)) => {
                    let el = Element {
                        name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                        ..Element::default()
                    };
                    stack.last_mut()?.children.push(el);
                }
                Ok(Event::Text(t)) => {
                    let s = t.decode().ok()?;
                    let s = quick_xml::escape::unescape(&s).ok()?;
                    stack.last_mut()?.text.push_str(&s);
                }
                Ok(Event::GeneralRef(r)) => {
                    let name = r.decode().ok()?;
                    let reference = format!("&{name};");
                    let s = quick_xml::escape::unescape(&reference).ok()?.into_owned();
                    stack.last_mut()?.text.push_str(&s);
                }
                Ok(Event::CData(t)) => {
                    stack
                        .last_mut()?
                        .text
                        .push_str(&String::from_utf8_lossy(&t.into_inner()));
                }
                Ok(Event::End(_)) => {
                    let mut el = stack.pop()?;
                    el.text = el.text.trim().to_string();
                    stack.last_mut()?.children.push(el);
                }
                Ok(Event::Eof) => break,
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        if stack.len() != 1 {
            return None;
        }
        let mut top = stack.pop()?;
        if top.children.len() != 1 {
            return None;
        }
        Some(Doc {
            root: top.children.remove(0),
        })
    }

    /// The text of the first element named `name` anywhere.
    pub fn first(&self, name: &str) -> Option<&str> {
        if self.root.name == name {
            return Some(&self.root.text);
        }
        self.root.find(name).map(|e| e.text.as_str())
    }
}

/// Escape text for an XML element or attribute.
pub fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_ec2_answer() {
        let d = Doc::parse(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeImagesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <imagesSet>
    <item><imageId>ami-1</imageId><name>a &amp; b</name>
      <tagSet><item><key>biovm:image</key><value>minimal</value></item></tagSet>
      <blockDeviceMapping/>
    </item>
    <item><imageId>ami-2</imageId></item>
  </imagesSet>
</DescribeImagesResponse>"#,
        )
        .unwrap();
        let items = d.root.items("imagesSet");
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].child_text("name"), Some("a & b"));
        assert_eq!(
            items[0].tags(),
            vec![("biovm:image".to_string(), "minimal".to_string())]
        );
        assert_eq!(d.first("imageId"), Some("ami-1"));
        assert!(Doc::parse("<a><b></a>").is_none());
        assert!(Doc::parse("not xml").is_none());
    }
}
