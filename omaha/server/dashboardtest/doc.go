// Package dashboardtest drives omahad's dashboard in a real headless Chromium, the way an
// operator uses it: open the page (the token as the HTTP Basic password), sign in with an
// admin token, click pause and confirm, search for a host and open its history.
//
// Browser starts Chromium confined to the loopback interface: its host resolver maps every name
// but 127.0.0.1 to nothing, background networking, component updates, sync and the like are off,
// and every request the page makes passes through the DevTools Fetch domain, which fails any
// request to another host and records it (Browser.Outside) so that a test can assert the page
// fetches nothing but omahad. The browser test skips when Chromium is missing or with -short.
package dashboardtest
