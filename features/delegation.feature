Feature: Delegated work is charged exactly, to the task that paid for it
  A hierarchical crew's manager hands pieces of a task to its coworkers. Every request the
  manager and the coworkers make is one record in that task; the figures below are compared
  with the fake server's own count of what it served for each [[marker]] (the manager's
  task and each piece it handed out carry their own).

  Scenario: A manager delegates to two coworkers in one reply, and they work at once
    Given the server answers every request after 200 ms
    And a hierarchical crew whose manager hands two pieces out in one reply
    When the delegating crew is kicked off
    Then the task's usage is the manager's requests plus both coworkers', to the token and the cent
    And the usage by agent splits it into the manager and each coworker
    And the two coworkers' requests overlapped in time

  Scenario: The same crew under kickoff_async
    Given the server answers every request after 200 ms
    And a hierarchical crew whose manager hands two pieces out in one reply
    When the delegating crew is kicked off with kickoff_async
    Then the task's usage is the manager's requests plus both coworkers', to the token and the cent
    And the two coworkers' requests overlapped in time

  Scenario: Fifty concurrent hierarchical kickoffs of one crew each report only their own usage
    Given the server answers every request after 20 ms
    And a hierarchical crew whose manager hands two pieces out in one reply, for 50 runs
    When 50 kickoffs of it are gathered with kickoff_async, a naive counter per agent listening
    Then every run's task and agents are charged exactly what the server served for the run
    But the naive counter charges at least one run's task for tokens it did not spend

  Scenario: A budget on the crew caps delegated work
    Given the server answers every request after 50 ms
    And a hierarchical crew whose manager hands two pieces out in one reply, with a budget of 2 requests
    When the delegating crew is kicked off
    Then the kickoff fails with BudgetExceededError carrying what the server served
    And the server served no more than 2 requests

  Scenario: A coworker cannot be someone who is not in the crew
    Given a hierarchical crew whose manager delegates to an unknown coworker
    When the delegating crew is kicked off
    Then the manager is told which coworkers it can delegate to
    And the crew's usage equals everything the server served

  Scenario: Planning is one request, in the crew's usage and in no task's
    Given a planning crew of two tasks
    When the delegating crew is kicked off
    Then exactly one planning request was served and it is in the crew's usage
    And no task's usage holds the planning request
