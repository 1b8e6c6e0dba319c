Feature: Every task, agent and kickoff is charged exactly what it spent
  crewline records each request once and adds records up; it never takes a task's usage as
  the difference of a shared counter before and after the task. Each figure below is
  compared with the fake server's own count of what it served for the task's [[marker]].

  Each scenario also feeds the very same run to a naive counter (one counter per agent or
  one for everything, read before and after each task, as the engine users know does it)
  and shows that the same comparison rejects its figures: the scenario can fail.

  Scenario: Parallel tasks of one agent are each charged only their own tokens
    Given the server answers every request after 50 ms
    And one agent with 6 parallel tasks of very different prompt sizes and a final task that gathers them
    When the crew is kicked off with a naive counter per agent listening
    Then every task's usage equals the server's count for its marker
    And the crew's usage equals everything the server served
    And the crew's usage is the sum of its tasks' usage
    But the naive counter charges at least one task for tokens it did not spend

  Scenario: The same parallel tasks under kickoff_async are each charged only their own tokens
    Given the server answers every request after 50 ms
    And one agent with 6 parallel tasks of very different prompt sizes and a final task that gathers them
    When the crew is kicked off with kickoff_async and a naive counter per agent listening
    Then every task's usage equals the server's count for its marker
    And the crew's usage equals everything the server served
    But the naive counter charges at least one task for tokens it did not spend

  Scenario: Twenty concurrent kickoffs of one crew each report only their own usage
    Given the server answers every request after 20 ms
    And one crew object whose two tasks are marked with the run's name
    When 20 kickoffs of it with different inputs are gathered with kickoff_async, a shared naive counter listening
    Then every kickoff's tasks each report the server's count for their markers
    And every kickoff's usage is the sum of its own tasks' usage and holds only its own records
    But the shared naive counter charges at least one task for tokens it did not spend

  Scenario: Eight threads kicking off one crew each report only their own usage
    Given threads switch every microsecond
    And the server answers every request after 20 ms
    And one crew object whose two tasks are marked with the run's name
    When 8 threads each kick it off at the same moment with different inputs, a shared naive counter listening
    Then every kickoff's tasks each report the server's count for their markers
    And every kickoff's usage is the sum of its own tasks' usage and holds only its own records
    But the shared naive counter charges at least one task for tokens it did not spend

  Scenario: One LLM shared by seven agents is counted once
    Given one LLM object shared by 7 agents, one task each
    When the crew is kicked off with a naive counter per LLM listening
    Then the crew's usage equals everything the server served
    And each agent's usage equals the server's count for its task
    But adding up each agent's LLM counter, the naive way, counts the server's tokens 7 times

  Scenario: A second kickoff reports only its own usage
    Given one crew object whose two tasks are marked with the run's name
    When it is kicked off as run "one", then as run "two" with a longer topic, a shared naive counter listening
    Then the usage of run "two" equals what the server served for run "two" alone
    And the usage of run "one" equals what the server served for run "one" alone
    But the naive lifetime counter reports both kickoffs as the second one's usage
