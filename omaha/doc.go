// Package omaha speaks the Omaha v3 update protocol in Flatcar's dialect: the XML documents
// Flatcar's update_engine sends and accepts (Flatcar's update_engine, omaha_request_action.cc and omaha_response_handler_action.cc), so that a Flatcar host can
// use a twinslot server and a twinslot host can use Nebraska.
//
// # Protocol
//
// A host POSTs one <request> per exchange to /v1/update/ (Content-Type text/xml) and gets one
// <response>. Each <app> of a request is one of:
//
//	update check   <ping active="1"> + <updatecheck> + <event eventtype="3" eventresult="2" previousversion="…">
//	after rollback <ping active="1"> + <updatecheck> + <event eventtype="3" eventresult="0" errorcode="44">
//	ping only      <ping active="1">  (update installed, waiting for reboot)
//	event          <event eventtype="13|14|3" eventresult="1|0|9" [errorcode="…"]>
//
// The <app> attributes identify the host: appid ({uuid}), version, track (channel or group),
// bootid ({uuid}), machineid (32 lowercase hex, no braces), machinealias, oem, oemversion,
// alephversion, board, lang, hardware_class, delta_okay.
//
// The response acknowledges each <ping> and <event> with status="ok" and answers an
// <updatecheck> with status="noupdate" or status="ok" plus <urls>, <manifest version>, the
// <package> (name, size, hash = base64 SHA-1, hash_sha256 = hex SHA-256) and the postinstall
// <action> whose sha256 (base64 SHA-256 of the whole file) is the check update_engine makes.
// update_engine treats any other updatecheck status as an invalid response (its error 34), so
// a server answers "noupdate" when a policy holds an update back.
//
// # API for servers
//
//	req, err := omaha.ParseRequest(r.Body)            // ≤ MaxRequestBytes; errors wrap ErrTooLarge (→ 413),
//	                                                    // ErrMalformed, ErrUnsupportedProtocol (→ 400)
//	resp := omaha.NewResponse()
//	for _, a := range req.Apps {
//		if err := a.Validate(); err != nil { … }       // *FieldError wrapping ErrInvalidField
//		id, err := omaha.ParseAppID(a.AppID)           // bare lowercase UUID
//		ra := resp.AddApp(a.AppID, omaha.StatusOK)     // or StatusUnknownApplication …
//		ra.Acknowledge(a)                              // ping and event acks
//		for _, ev := range a.Events { … ev.Type, ev.Result, ev.ErrorCode.Base() == omaha.ErrorCodeRollback … }
//		if a.UpdateCheck != nil {
//			ra.AddUpdateCheck(omaha.StatusNoUpdate)    // or:
//			ra.AddUpdate(omaha.Update{Version, URLs, PackageName, Size, SHA256, SHA1})
//		}
//	}
//	body, err := resp.Marshal()                        // served with ContentType
//
// # API for hosts
//
// The agent passes its identity in a Host (this package reads no files) and calls a Client:
//
//	c, err := omaha.NewClient(servers, omaha.ClientOptions{Timeout: 30 * time.Second})
//	res, err := c.UpdateCheck(ctx, host, omaha.CheckOptions{PreviousVersion: prev}) // or Rollback: true
//	// res.Update == nil: noupdate; else res.Update.DownloadURLs(), Size, SHA256
//	err = c.Event(ctx, host, omaha.Event{Type: omaha.EventTypeUpdateDownloadStarted, Result: omaha.EventResultSuccess})
//	err = c.Event(ctx, host, omaha.ErrorEvent(code))
//	err = c.Ping(ctx, host)
//
// Each call tries the servers in order, failing over on transport errors, timeouts and HTTP
// 5xx/408/429. Failures are *Error: Transient says whether to retry later with backoff, Code()
// gives the update_engine error code to report (2000+HTTP status, 30, 31, 34, 2).
// (*UpdateCheck).Update extracts and checks an offer as update_engine would.
//
// # Invariants
//
//   - Parsing never trusts its input: bodies are capped (MaxRequestBytes, MaxResponseBytes),
//     element counts are capped (MaxApps, MaxEventsPerApp, MaxURLs, MaxPackages), and content
//     after the root element is refused. Attribute values are judged by (*App).Validate and
//     the Check* helpers, not by the parser.
//   - Marshal writes update_engine's shape: every request <app> attribute present (even when
//     empty), errorcode only on non-success results, previousversion always on the 3/2 event;
//     ErrorCode is written signed 32-bit as update_engine prints it and parsed signed or not.
//   - Hash encodings are fixed by type: Update carries raw digests; AddUpdate writes hex
//     hash_sha256, base64 hash and base64 postinstall sha256, and Update() reads them back.
package omaha
