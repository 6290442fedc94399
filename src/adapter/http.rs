//! The SDK's http context for one request: a thin shim over a `Driver` taken from, and given
//! back to, the VM's pool of spare drivers.

use super::driver::Driver;
use super::root::Shared;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action as HostAction;
use std::cell::RefCell;
use std::rc::Rc;

/// The SDK-facing http context: a thin shim over a shared `Driver`.
pub struct HttpShim {
    id: u32,
    shared: Rc<Shared>,
    driver: Rc<RefCell<Driver>>,
}

impl HttpShim {
    /// A new request context, on a spare driver if the VM has one.
    pub fn new(id: u32, shared: Rc<Shared>) -> Self {
        let spare = shared.spare_drivers.borrow_mut().pop();
        let driver = match spare {
            Some(driver) => {
                if let Ok(mut d) = driver.try_borrow_mut() {
                    d.serve(id);
                }
                driver
            }
            None => Driver::new_shared(id, shared.clone()),
        };
        HttpShim { id, shared, driver }
    }

    fn with<R>(&self, fallback: R, f: impl FnOnce(&mut Driver) -> R) -> R {
        match self.driver.try_borrow_mut() {
            Ok(mut d) => f(&mut d),
            Err(_) => {
                log::warn!("kong_retry [{}]: re-entrant callback ignored", self.id);
                fallback
            }
        }
    }
}

/// Spare drivers a VM keeps (about the requests one worker has in flight at once).
const SPARE_DRIVERS: usize = 64;

impl Drop for HttpShim {
    fn drop(&mut self) {
        let reusable = match self.driver.try_borrow_mut() {
            Ok(mut d) => {
                d.reset();
                // Nobody else holds it (a root callback would hold a strong reference).
                Rc::strong_count(&self.driver) == 1
            }
            Err(_) => {
                self.shared.unregister(self.id);
                false
            }
        };
        if reusable {
            if let Ok(mut spare) = self.shared.spare_drivers.try_borrow_mut() {
                if spare.len() < SPARE_DRIVERS {
                    spare.push(self.driver.clone());
                }
            }
        }
    }
}

impl Context for HttpShim {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        self.with((), |d| d.on_call_response(token_id, num_headers, body_size));
    }
}

impl HttpContext for HttpShim {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> HostAction {
        // Kong always says end_of_stream = false: the exchange decides from the headers.
        self.with(HostAction::Continue, |d| {
            d.on_request_headers(end_of_stream)
        })
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> HostAction {
        self.with(HostAction::Continue, |d| {
            d.on_request_body(body_size, end_of_stream)
        })
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> HostAction {
        self.with(HostAction::Continue, |d| {
            d.on_response_headers(end_of_stream)
        })
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> HostAction {
        self.with(HostAction::Continue, |d| {
            d.on_response_body(body_size, end_of_stream)
        })
    }
}
