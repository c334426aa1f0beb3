//! How a job's steps report: instance output and messages become events on
//! the job's bus (which redacts them), never direct writes.

use super::context::JobContext;
use crate::ui::{Event, Stream};

impl JobContext {
    /// Sends an event of this job to the bus.
    pub fn emit(&self, event: Event) {
        self.bus.emit(event);
    }

    /// Streams a line of instance output.
    pub fn output(&self, stream: Stream, line: String) {
        self.bus.emit(Event::Output {
            job: self.name.clone(),
            stream,
            line,
        });
    }

    /// Streams instance output from a background task (a VM's serial
    /// console) that outlives any one step.
    pub fn output_sink(&self) -> impl Fn(Stream, String) + Send + Sync + 'static {
        let (bus, job) = (self.bus.clone(), self.name.clone());
        move |stream, line| {
            bus.emit(Event::Output {
                job: job.clone(),
                stream,
                line,
            })
        }
    }

    /// Tells the user something about this job, from code that only gets
    /// a callback (a communicator).
    pub fn message_sink(&self) -> impl Fn(String) + Send + Sync + 'static {
        let (bus, job) = (self.bus.clone(), self.name.clone());
        move |text| {
            bus.emit(Event::Message {
                job: Some(job.clone()),
                text,
            })
        }
    }

    /// Tells the user something about this job.
    pub fn message(&self, text: String) {
        self.bus.emit(Event::Message {
            job: Some(self.name.clone()),
            text,
        });
    }
}
