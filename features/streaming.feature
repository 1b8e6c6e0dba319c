Feature: A streamed kickoff shows its text as it is written, and every streamed token is paid for
  crew.stream() and crew.astream() yield one kickoff's events as they happen, the text of
  every reply among them as TextDelta events. Figures are checked against the fake server's
  own count; it streams word by word and records streams the client cut off.

  Scenario: Concurrent streams of one crew each see only their own kickoff, with exact usage
    Given the server streams word by word, 2 ms apart
    And a crew whose two tasks are marked with the kickoff's tag
    When 20 kickoffs of that one crew are streamed at once with astream
    Then every stream yielded events of its own kickoff only
    And each stream's text deltas, joined per task and attempt, are that attempt's answer
    And every task's usage equals what the server served for it, and every request was streamed

  Scenario: Leaving a stream early cancels the kickoff and pays the cut-off reply in full
    Given the server streams word by word, 20 ms apart
    And a crew with a long first task and a second task, under a budget of $1
    When the consumer leaves the stream after 5 words
    Then the server saw the connection closed before the reply ended
    And the request is on record as cancelled, and the result raises the cancellation
    And the budget was charged at least what the server billed, and nothing stays reserved
    And the second task never ran

  Scenario: A reply that ends without a usage chunk is unpriced and charged its full hold
    Given the server streams replies that end without a usage chunk
    And a crew with one task, under a budget of $1
    When the crew is streamed to its end
    Then the request is on record as unpriced, with no tokens
    And the budget was charged the full hold of the request
    But litellm itself reports usage for that same reply, made up from its own count (the control)
